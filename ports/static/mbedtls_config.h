/*
 * mbedtls_config.h - the mbedTLS 2.28 configuration of the static builds.
 *
 * Replaces include/mbedtls/config.h in the static build's copy of mbedTLS,
 * so that mbedTLS, libcurl and the agent all compile against the same
 * configuration (a struct layout that differs between them would be a
 * silent memory error).
 *
 * What is in: a TLS 1.2 client (the agent never serves TLS), X.509
 * certificate parsing and verification, PEM files, RSA and ECDSA
 * certificates, ECDHE key exchange on the usual curves, AES-GCM, AES-CBC and
 * ChaCha20-Poly1305 suites, and SHA-1/SHA-256/SHA-512 and MD5 (libcurl's
 * HTTP digest authentication and the SHA-256 of the AWS signature and of
 * the agent's batch ids).
 *
 * What is out: the TLS server, DTLS, TLS 1.0/1.1, renegotiation, finite
 * field Diffie-Hellman, legacy ciphers (DES, ARC4, Blowfish, Camellia,
 * ARIA), PSA, debug strings and self tests.
 */
#ifndef AGENT_MBEDTLS_CONFIG_H
#define AGENT_MBEDTLS_CONFIG_H

/* System support */
#define MBEDTLS_HAVE_ASM
#define MBEDTLS_HAVE_TIME
#define MBEDTLS_HAVE_TIME_DATE
#define MBEDTLS_FS_IO
#define MBEDTLS_DEPRECATED_WARNING

/* Randomness: getrandom(2) or /dev/urandom, then CTR-DRBG. */
#define MBEDTLS_ENTROPY_C
#define MBEDTLS_CTR_DRBG_C

/* Hashes and MACs */
#define MBEDTLS_MD_C
#define MBEDTLS_MD5_C
#define MBEDTLS_SHA1_C
#define MBEDTLS_SHA256_C
#define MBEDTLS_SHA512_C

/* Ciphers */
#define MBEDTLS_CIPHER_C
#define MBEDTLS_AES_C
#define MBEDTLS_AES_ROM_TABLES
#define MBEDTLS_CIPHER_MODE_CBC
#define MBEDTLS_GCM_C
#define MBEDTLS_CHACHA20_C
#define MBEDTLS_POLY1305_C
#define MBEDTLS_CHACHAPOLY_C

/* Public keys */
#define MBEDTLS_BIGNUM_C
#define MBEDTLS_OID_C
#define MBEDTLS_ASN1_PARSE_C
#define MBEDTLS_ASN1_WRITE_C
#define MBEDTLS_BASE64_C
#define MBEDTLS_PEM_PARSE_C
#define MBEDTLS_PK_C
#define MBEDTLS_PK_PARSE_C
#define MBEDTLS_PK_WRITE_C
#define MBEDTLS_RSA_C
#define MBEDTLS_PKCS1_V15
#define MBEDTLS_PKCS1_V21
#define MBEDTLS_ECP_C
#define MBEDTLS_ECDH_C
#define MBEDTLS_ECDSA_C
#define MBEDTLS_ECP_NIST_OPTIM
#define MBEDTLS_ECP_DP_SECP256R1_ENABLED
#define MBEDTLS_ECP_DP_SECP384R1_ENABLED
#define MBEDTLS_ECP_DP_SECP521R1_ENABLED
#define MBEDTLS_ECP_DP_CURVE25519_ENABLED

/* Certificates */
#define MBEDTLS_X509_USE_C
#define MBEDTLS_X509_CRT_PARSE_C
#define MBEDTLS_X509_CRL_PARSE_C
#define MBEDTLS_X509_RSASSA_PSS_SUPPORT
#define MBEDTLS_X509_CHECK_KEY_USAGE
#define MBEDTLS_X509_CHECK_EXTENDED_KEY_USAGE

/* TLS 1.2 client */
#define MBEDTLS_SSL_TLS_C
#define MBEDTLS_SSL_CLI_C
#define MBEDTLS_SSL_PROTO_TLS1_2
#define MBEDTLS_SSL_SERVER_NAME_INDICATION
#define MBEDTLS_SSL_ALPN
#define MBEDTLS_SSL_ENCRYPT_THEN_MAC
#define MBEDTLS_SSL_EXTENDED_MASTER_SECRET
#define MBEDTLS_SSL_SESSION_TICKETS
#define MBEDTLS_SSL_KEEP_PEER_CERTIFICATE
#define MBEDTLS_SSL_MAX_FRAGMENT_LENGTH
#define MBEDTLS_KEY_EXCHANGE_ECDHE_RSA_ENABLED
#define MBEDTLS_KEY_EXCHANGE_ECDHE_ECDSA_ENABLED
#define MBEDTLS_KEY_EXCHANGE_RSA_ENABLED

/* Messages for the agent's and libcurl's error reports. */
#define MBEDTLS_ERROR_C
#define MBEDTLS_VERSION_C

#include "mbedtls/check_config.h"

#endif /* AGENT_MBEDTLS_CONFIG_H */
