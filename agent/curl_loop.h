/* curl_loop.h - libcurl's multi interface driven by the agent's loop.
 *
 * One struct curl_loop per output instance owns a CURLM whose sockets are
 * watched with loop_fd and whose timeouts are a loop_timer (the
 * CURLMOPT_SOCKETFUNCTION / CURLMOPT_TIMERFUNCTION pattern of curl's
 * docs/examples/ephiperfifo.c). Transfers never block the loop.
 * Functions return 0 or a negative errno.
 */
#ifndef AGENT_CURL_LOOP_H
#define AGENT_CURL_LOOP_H

#include <stdbool.h>
#include <stdint.h>

#include <curl/curl.h>

#include "loop.h"

struct curl_loop;

/* Called from the loop when a transfer ends: result is libcurl's code for
 * the transfer (CURLE_OK when an HTTP response arrived, whatever its
 * status); the easy handle is no longer part of the multi handle and
 * belongs to the caller again. */
typedef void (*curl_done_cb)(CURL *easy, CURLcode result, void *arg);

int curl_loop_init(struct curl_loop **cl, struct loop *l);
/* Removes (without completing) any transfer still running. Accepts NULL. */
void curl_loop_free(struct curl_loop *cl);
/* Start a prepared easy handle; done is called exactly once for it,
 * unless curl_loop_remove() is called first. */
int curl_loop_add(struct curl_loop *cl, CURL *easy, curl_done_cb done, void *arg);
/* Abandon a running transfer; its done callback is not called. */
void curl_loop_remove(struct curl_loop *cl, CURL *easy);
/* Transfers currently running (a probe not counted). */
int curl_loop_running(const struct curl_loop *cl);

/* Start a cheap check that host:port accepts TCP connections: libcurl's
 * CONNECT_ONLY on the loop (its resolver, no request sent, closed at
 * once), through proxy when not NULL ("" for none; with a proxy the check
 * is a CONNECT to host:port through it). done gets 0 or -errno
 * (-ECONNREFUSED, -ETIMEDOUT, -EHOSTUNREACH, ...) from the loop, unless
 * the curl_loop is freed first. One at a time: -EBUSY while one runs. */
int curl_loop_probe(struct curl_loop *cl, const char *host, int port, const char *proxy,
		    int64_t timeout_ms, void (*done)(void *arg, int err), void *arg);
/* Did a transfer that ended with rc fail before any connection to the
 * server was made (refused, unreachable, name not resolved, connect timed
 * out)? Such a failure says nothing about the server, only its reach. */
bool curl_loop_unreachable(CURL *easy, CURLcode rc);

#endif
