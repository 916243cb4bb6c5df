/* bench-udp-load.c - the load generator of tools/bench-udp: sends JSON
 * lines as UDP datagrams to 127.0.0.1:PORT at a given rate, in bursts of
 * sendmmsg(2) every millisecond, and prints how many it sent.
 *
 *   bench-udp-load PORT RATE SECONDS LINES_PER_DATAGRAM [FIRST_ID]
 *
 * RATE is datagrams per second (0: as fast as the socket takes them). Each
 * line is {"id":N,"sensor":"t-07","v":N.25,"pad":"..."} (about 100 bytes),
 * ids counting up from FIRST_ID. Output: "sent DATAGRAMS LINES SECONDS".
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BURST_MAX 256
#define DGRAM_MAX 65000

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	static char bufs[BURST_MAX][DGRAM_MAX];
	struct mmsghdr msgs[BURST_MAX];
	struct iovec iov[BURST_MAX];
	struct sockaddr_in a = { .sin_family = AF_INET };
	long port, rate, lines;
	double secs, t0, t, sent_due = 0;
	uint64_t id, dgrams = 0, nlines = 0;
	int fd, sndbuf = 4 << 20;

	if (argc < 5) {
		fprintf(stderr, "usage: %s PORT RATE SECONDS LINES_PER_DATAGRAM [FIRST_ID]\n", argv[0]);
		return 2;
	}
	port = strtol(argv[1], NULL, 10);
	rate = strtol(argv[2], NULL, 10);
	secs = strtod(argv[3], NULL);
	lines = strtol(argv[4], NULL, 10);
	id = argc > 5 ? strtoull(argv[5], NULL, 10) : 1;
	if (lines < 1 || lines > 500) {
		fprintf(stderr, "bench-udp-load: 1 to 500 lines per datagram\n");
		return 2;
	}
	a.sin_port = htons((uint16_t)port);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	fd = socket(AF_INET, SOCK_DGRAM, 0);
	if (fd < 0) {
		perror("socket");
		return 1;
	}
	setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
	t0 = now_s();
	for (;;) {
		int burst, n;

		t = now_s() - t0;
		if (t >= secs)
			break;
		if (rate > 0) {
			double due = t * (double)rate - sent_due;

			if (due < 1) {
				struct timespec ts = { 0, 200000 };

				nanosleep(&ts, NULL);
				continue;
			}
			burst = due > BURST_MAX ? BURST_MAX : (int)due;
		} else {
			burst = BURST_MAX;
		}
		for (int i = 0; i < burst; i++) {
			size_t len = 0;

			for (long k = 0; k < lines; k++) {
				len += (size_t)snprintf(bufs[i] + len, DGRAM_MAX - len,
							"{\"id\":%llu,\"sensor\":\"t-%02llu\",\"v\":%llu.25,"
							"\"pad\":\"%040d\"}\n",
							(unsigned long long)id, (unsigned long long)(id % 100),
							(unsigned long long)(id % 1000), 0);
				id++;
			}
			iov[i].iov_base = bufs[i];
			iov[i].iov_len = len;
			memset(&msgs[i], 0, sizeof(msgs[i]));
			msgs[i].msg_hdr.msg_iov = &iov[i];
			msgs[i].msg_hdr.msg_iovlen = 1;
			msgs[i].msg_hdr.msg_name = &a;
			msgs[i].msg_hdr.msg_namelen = sizeof(a);
		}
		n = sendmmsg(fd, msgs, (unsigned)burst, 0);
		if (n < 0) {
			if (errno == EINTR || errno == ENOBUFS || errno == EAGAIN)
				n = 0;
			else {
				perror("sendmmsg");
				return 1;
			}
		}
		/* Ids of datagrams not sent are skipped, never reused. */
		dgrams += (uint64_t)n;
		nlines += (uint64_t)n * (uint64_t)lines;
		sent_due += burst;
	}
	printf("sent %llu %llu %.3f\n", (unsigned long long)dgrams, (unsigned long long)nlines,
	       now_s() - t0);
	close(fd);
	return 0;
}
