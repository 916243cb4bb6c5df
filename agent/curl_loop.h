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
/* Transfers currently running. */
int curl_loop_running(const struct curl_loop *cl);

#endif
