/* modbus_link.c - Modbus transports on the agent's loop: Modbus TCP, RTU on
 * a serial line and RTU over TCP (serial-to-Ethernet converters), never
 * blocking: non-blocking connects and I/O through fd watches, timeouts and
 * the RTU line's silences through timers.
 *
 * A bus carries one transaction at a time. Every input on the same serial
 * device or the same RTU-over-TCP endpoint shares one bus (the registry
 * below, keyed by the device or endpoint), so their requests queue instead
 * of colliding on the wire; a Modbus TCP device has a connection of its own
 * (transaction ids keep its answers apart).
 *
 * An RTU frame ends when the length its header announces has arrived; a
 * frame that stops short is known by the line falling silent (3.5
 * characters, plus a tolerance for USB adapters that deliver in bursts).
 * Before each request the line is kept silent for 3.5 characters. Bytes that
 * arrive while no request is waiting (a late answer after a timeout) are
 * dropped, so they cannot be taken for the next answer.
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <termios.h>
#include <unistd.h>

#include "modbus.h"

/* What a USB serial adapter may add between the bytes of one frame (its
 * latency timer is 16 ms by default). */
#define RTU_GAP_SLACK_MS 20

enum bus_state { BUS_CLOSED, BUS_CONNECTING, BUS_OPEN };
enum bus_phase { PH_IDLE, PH_SILENCE, PH_SENDING, PH_WAITING };

struct mb_bus {
	struct mb_bus *next;            /* the registry of shared buses */
	char *key;                      /* NULL: not shared (Modbus TCP) */
	int refs;
	struct loop *loop;
	struct mb_link_conf conf;
	struct loop_fd fdw;
	struct loop_timer timer;        /* timeout, silence, end of a short frame */
	struct loop_timer kick;         /* starts the next transaction */
	int state;                      /* enum bus_state */
	int phase;                      /* enum bus_phase */
	struct mb_xact *head, *tail;    /* waiting */
	struct mb_xact *cur;            /* in flight; NULL once cancelled */
	bool busy;                      /* a transaction is on the wire */
	uint8_t unit;
	int func;
	uint16_t count, tid;
	int64_t deadline, quiet_since;
	int64_t silence_ms, gap_ms;
	uint8_t tx[MB_MAX_ADU];
	size_t tx_len, tx_off;
	uint8_t rx[2 * MB_MAX_ADU];
	size_t rx_len;
	bool connected;
	char why[160];
};

static struct mb_bus *shared_buses;

static void bus_close(struct mb_bus *b, const char *why, int err);
static void bus_finish(struct mb_bus *b, int result, int err);

int mb_url_parse(const char *url, struct mb_link_conf *c, char *err, size_t errlen)
{
	const char *rest, *colon;
	size_t hl;

	memset(c, 0, sizeof(*c));
	c->baud = 19200;
	c->data_bits = 8;
	c->stop_bits = 1;
	if (!strncmp(url, "tcp://", 6)) {
		c->proto = MB_TCP;
		rest = url + 6;
	} else if (!strncmp(url, "rtu+tcp://", 10)) {
		c->proto = MB_RTU_TCP;
		rest = url + 10;
	} else if (!strncmp(url, "rtu://", 6)) {
		c->proto = MB_RTU;
		if (url[6] != '/' || !url[7]) {
			snprintf(err, errlen, "'%s': an RTU url names the serial device: rtu:///dev/ttyUSB0", url);
			return -EINVAL;
		}
		c->path = xstrdup(url + 6);
		return c->path ? 0 : -ENOMEM;
	} else {
		snprintf(err, errlen, "'%s' is not tcp://host[:port], rtu:///dev/tty... or rtu+tcp://host:port",
			 url);
		return -EINVAL;
	}
	if (*rest == '[') {
		const char *end = strchr(rest, ']');

		if (!end) {
			snprintf(err, errlen, "'%s': ']' missing", url);
			return -EINVAL;
		}
		hl = (size_t)(end - rest - 1);
		c->host = xstrndup(rest + 1, hl);
		colon = end[1] == ':' ? end + 1 : NULL;
		if (end[1] && !colon)
			goto bad;
	} else {
		colon = strrchr(rest, ':');
		hl = colon ? (size_t)(colon - rest) : strlen(rest);
		c->host = xstrndup(rest, hl);
	}
	if (!c->host)
		return -ENOMEM;
	if (!c->host[0] || strchr(c->host, '/'))
		goto bad;
	c->port = xstrdup(colon ? colon + 1 : "502");
	if (!c->port)
		return -ENOMEM;
	if (!c->port[0] || strspn(c->port, "0123456789") != strlen(c->port) || atoi(c->port) < 1 ||
	    atoi(c->port) > 65535)
		goto bad;
	if (c->proto == MB_RTU_TCP && !colon) {
		snprintf(err, errlen, "'%s': give the converter's port (rtu+tcp://host:4001)", url);
		return -EINVAL;
	}
	return 0;
bad:
	snprintf(err, errlen, "'%s': not a host and port", url);
	return -EINVAL;
}

void mb_link_conf_release(struct mb_link_conf *c)
{
	xfree(c->host);
	xfree(c->port);
	xfree(c->path);
	c->host = c->port = c->path = NULL;
}

/* "cannot connect to 10.0.0.5:502: Connection refused" */
static void set_why(struct mb_bus *b, const char *what, int err)
{
	if (b->conf.path)
		snprintf(b->why, sizeof(b->why), "%s %s: %s", what, b->conf.path, strerror(err));
	else
		snprintf(b->why, sizeof(b->why), "%s %s:%s: %s", what, b->conf.host, b->conf.port,
			 strerror(err));
}

static speed_t baud_const(int64_t baud)
{
	switch (baud) {
	case 1200: return B1200;
	case 2400: return B2400;
	case 4800: return B4800;
	case 9600: return B9600;
	case 19200: return B19200;
	case 38400: return B38400;
	case 57600: return B57600;
	case 115200: return B115200;
	case 230400: return B230400;
	default: return 0;
	}
}

static int open_serial(struct mb_bus *b)
{
	const struct mb_link_conf *c = &b->conf;
	struct termios t;
	speed_t sp = baud_const(c->baud);
	int fd, e;

	fd = open(c->path, O_RDWR | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (tcgetattr(fd, &t))
		goto out_close;
	cfmakeraw(&t);
	t.c_cflag &= ~(tcflag_t)(CSIZE | PARENB | PARODD | CSTOPB | CRTSCTS);
	t.c_cflag |= CLOCAL | CREAD | (c->data_bits == 7 ? CS7 : CS8);
	if (c->parity != MB_PAR_NONE)
		t.c_cflag |= PARENB | (c->parity == MB_PAR_ODD ? PARODD : 0);
	if (c->stop_bits == 2)
		t.c_cflag |= CSTOPB;
	t.c_cc[VMIN] = 0;
	t.c_cc[VTIME] = 0;
	if (cfsetispeed(&t, sp) || cfsetospeed(&t, sp) || tcsetattr(fd, TCSANOW, &t))
		goto out_close;
	tcflush(fd, TCIOFLUSH);
	return fd;

out_close:
	e = errno;
	close(fd);
	return -e;
}

/* Start a non-blocking connect. The fd, or -errno. */
static int open_tcp(struct mb_bus *b)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV };
	struct addrinfo *ai = NULL;
	int fd, rc, one = 1;

	rc = getaddrinfo(b->conf.host, b->conf.port, &hints, &ai);
	if (rc == EAI_NONAME) {
		/* A name: resolved by the system (normally /etc/hosts). */
		hints.ai_flags = AI_NUMERICSERV;
		rc = getaddrinfo(b->conf.host, b->conf.port, &hints, &ai);
	}
	if (rc)
		return rc == EAI_MEMORY ? -ENOMEM : -EHOSTUNREACH;
	fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		rc = -errno;
		goto out_free;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(fd, ai->ai_addr, ai->ai_addrlen) && errno != EINPROGRESS) {
		rc = -errno;
		close(fd);
		goto out_free;
	}
	rc = fd;
out_free:
	freeaddrinfo(ai);
	return rc;
}

static void send_more(struct mb_bus *b)
{
	while (b->tx_off < b->tx_len) {
		ssize_t n = write(b->fdw.fd, b->tx + b->tx_off, b->tx_len - b->tx_off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN) {
			loop_fd_update(b->loop, &b->fdw, LOOP_READ | LOOP_WRITE);
			return;
		}
		if (n < 0) {
			int e = errno;

			bus_close(b, "cannot write to", e);
			bus_finish(b, MB_R_IO, -e);
			return;
		}
		b->tx_off += (size_t)n;
	}
	loop_fd_update(b->loop, &b->fdw, LOOP_READ);
	b->phase = PH_WAITING;
	loop_timer_at(b->loop, &b->timer, b->deadline);
}

static void start_send(struct mb_bus *b)
{
	int64_t now = loop_now_ms();

	/* RTU: the line silent for 3.5 characters before a frame. */
	if (b->conf.proto == MB_RTU && now < b->quiet_since + b->silence_ms) {
		b->phase = PH_SILENCE;
		loop_timer_at(b->loop, &b->timer, b->quiet_since + b->silence_ms);
		return;
	}
	b->rx_len = 0;
	b->phase = PH_SENDING;
	b->deadline = now + (b->cur ? b->cur->timeout_ms : 1000);
	if (b->cur)
		b->cur->sent_ms = now;
	send_more(b);
}

static void bus_finish(struct mb_bus *b, int result, int err)
{
	struct mb_xact *x = b->cur;

	if (!b->busy)
		return;
	b->busy = false;
	b->cur = NULL;
	b->phase = PH_IDLE;
	b->quiet_since = loop_now_ms();
	loop_timer_cancel(b->loop, &b->timer);
	loop_timer_set(b->loop, &b->kick, 0);
	if (x) {
		x->err = err;
		x->bus = NULL;
		x->done(x, result);
	}
}

static void bus_close(struct mb_bus *b, const char *why, int err)
{
	if (b->fdw.fd >= 0) {
		loop_fd_del(b->loop, &b->fdw);
		close(b->fdw.fd);
		b->fdw.fd = -1;
	}
	b->state = BUS_CLOSED;
	b->connected = false;
	b->rx_len = 0;
	if (why)
		set_why(b, why, err);
}

/* An answer in rx: is it complete, and what is it? */
static void try_answer(struct mb_bus *b)
{
	struct mb_xact *x = b->cur;
	const uint8_t *data = NULL;
	size_t dlen = 0;
	int exc = 0, len, rc;

	for (;;) {
		len = b->conf.proto == MB_TCP ? mb_tcp_frame_len(b->rx, b->rx_len)
					      : mb_rtu_frame_len(b->rx, b->rx_len);
		if (len == -EAGAIN || (len > 0 && (size_t)len > b->rx_len)) {
			/* A serial frame that stops short ends by silence. */
			if (b->conf.proto == MB_RTU && b->rx_len) {
				int64_t gap = loop_now_ms() + b->gap_ms;

				loop_timer_at(b->loop, &b->timer, gap < b->deadline ? gap : b->deadline);
			}
			return;
		}
		if (len < 0) {
			/* Not a frame: the stream cannot be trusted until it is
			 * opened again (TCP) or has fallen silent (RTU). */
			if (b->conf.proto != MB_RTU)
				bus_close(b, NULL, 0);
			bus_finish(b, MB_R_PROTOCOL, len);
			return;
		}
		if (b->conf.proto == MB_TCP)
			rc = mb_tcp_check(b->rx, (size_t)len, b->tid, b->unit, b->func, b->count,
					  &data, &dlen, &exc);
		else
			rc = mb_rtu_check(b->rx, (size_t)len, b->unit, b->func, b->count,
					  &data, &dlen, &exc);
		if (rc == MB_E_TID) {
			/* A late answer to an earlier request: drop it. */
			memmove(b->rx, b->rx + len, b->rx_len - (size_t)len);
			b->rx_len -= (size_t)len;
			continue;
		}
		if (x) {
			x->data = data;
			x->dlen = dlen;
			x->exception = exc;
		}
		if (!rc)
			bus_finish(b, MB_R_OK, 0);
		else if (rc == MB_E_EXCEPTION)
			bus_finish(b, MB_R_EXCEPTION, rc);
		else if (rc == MB_E_CRC)
			bus_finish(b, MB_R_CRC, rc);
		else
			bus_finish(b, MB_R_PROTOCOL, rc);
		return;
	}
}

static void on_readable(struct mb_bus *b, unsigned revents)
{
	for (;;) {
		size_t room = sizeof(b->rx) - b->rx_len;
		ssize_t n;

		if (!room) {
			/* More than any answer: garbage. */
			b->rx_len = 0;
			if (b->busy && b->phase == PH_WAITING)
				bus_finish(b, MB_R_PROTOCOL, MB_E_LENGTH);
			room = sizeof(b->rx);
		}
		n = read(b->fdw.fd, b->rx + b->rx_len, room);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			break;
		/* A tty in raw mode reads 0 when nothing is there; only a
		 * hangup (the error event with nothing to read) ends it. */
		if (!n && b->conf.proto == MB_RTU && !(revents & LOOP_ERROR))
			break;
		if (n <= 0) {
			int e = n ? errno : ECONNRESET;

			bus_close(b, n ? "cannot read from" : "connection closed by", e);
			bus_finish(b, MB_R_IO, -e);
			return;
		}
		if (b->busy && b->phase == PH_WAITING) {
			b->rx_len += (size_t)n;
		} else {
			b->rx_len = 0;  /* not asked for */
			b->quiet_since = loop_now_ms();
		}
	}
	if (b->busy && b->phase == PH_WAITING)
		try_answer(b);
}

static void bus_fd_cb(struct loop_fd *w, unsigned revents)
{
	struct mb_bus *b = container_of(w, struct mb_bus, fdw);

	if (b->state == BUS_CONNECTING) {
		int soerr = 0;
		socklen_t sl = sizeof(soerr);

		if (getsockopt(w->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) || soerr) {
			int e = soerr ? soerr : errno;

			bus_close(b, "cannot connect to", e);
			bus_finish(b, MB_R_CONNECT, -e);
			return;
		}
		b->state = BUS_OPEN;
		b->connected = true;
		b->why[0] = '\0';
		loop_fd_update(b->loop, w, LOOP_READ);
		start_send(b);
		return;
	}
	if (revents & LOOP_READ || revents & LOOP_ERROR)
		on_readable(b, revents);
	if (b->state == BUS_OPEN && revents & LOOP_WRITE && b->busy && b->phase == PH_SENDING)
		send_more(b);
}

static int bus_open(struct mb_bus *b)
{
	int fd = b->conf.proto == MB_RTU ? open_serial(b) : open_tcp(b);
	int rc;

	if (fd < 0) {
		set_why(b, b->conf.proto == MB_RTU ? "cannot open" : "cannot connect to", -fd);
		return fd;
	}
	b->fdw.fd = fd;
	b->fdw.events = b->conf.proto == MB_RTU ? LOOP_READ : LOOP_WRITE;
	rc = loop_fd_add(b->loop, &b->fdw);
	if (rc) {
		close(fd);
		b->fdw.fd = -1;
		return rc;
	}
	if (b->conf.proto == MB_RTU) {
		b->state = BUS_OPEN;
		b->connected = true;
		b->why[0] = '\0';
		b->quiet_since = loop_now_ms();
	} else {
		b->state = BUS_CONNECTING;
	}
	return 0;
}

static int64_t bus_kick(struct loop_timer *t)
{
	struct mb_bus *b = container_of(t, struct mb_bus, kick);
	struct mb_xact *x;
	uint8_t pdu[5];
	size_t pl;
	int rc;

	if (b->busy || !b->head)
		return -1;
	x = b->head;
	b->head = x->next;
	if (!b->head)
		b->tail = NULL;
	x->next = NULL;
	x->queued = false;
	b->cur = x;
	b->busy = true;
	b->unit = x->unit;
	b->func = x->func;
	b->count = x->count;
	pl = mb_pdu_read(pdu, x->func, x->addr, x->count);
	if (b->conf.proto == MB_TCP) {
		b->tid++;
		b->tx_len = mb_frame_tcp(b->tx, b->tid, x->unit, pdu, pl);
	} else {
		b->tx_len = mb_frame_rtu(b->tx, x->unit, pdu, pl);
	}
	b->tx_off = 0;
	b->deadline = loop_now_ms() + x->timeout_ms;
	if (b->state == BUS_CLOSED) {
		rc = bus_open(b);
		if (rc) {
			bus_finish(b, MB_R_CONNECT, rc);
			return -1;
		}
	}
	if (b->state == BUS_CONNECTING) {
		/* The connect counts against the request's timeout. */
		b->phase = PH_SENDING;
		loop_timer_at(b->loop, &b->timer, b->deadline);
		return -1;
	}
	start_send(b);
	return -1;
}

static int64_t bus_timer(struct loop_timer *t)
{
	struct mb_bus *b = container_of(t, struct mb_bus, timer);
	int64_t now = loop_now_ms();

	if (!b->busy)
		return -1;
	if (b->phase == PH_SILENCE) {
		start_send(b);
		return -1;
	}
	if (now >= b->deadline) {
		if (b->state == BUS_CONNECTING) {
			bus_close(b, "cannot connect to", ETIMEDOUT);
			bus_finish(b, MB_R_CONNECT, -ETIMEDOUT);
			return -1;
		}
		/* Bytes that came but never made a whole frame: damaged. */
		bus_finish(b, b->rx_len ? (b->conf.proto == MB_RTU_TCP ? MB_R_PROTOCOL : MB_R_CRC)
					: MB_R_TIMEOUT, b->rx_len ? MB_E_SHORT : -ETIMEDOUT);
		b->rx_len = 0;
		return -1;
	}
	if (b->phase == PH_WAITING && b->rx_len) {
		/* The line fell silent in the middle of a frame. */
		b->rx_len = 0;
		bus_finish(b, MB_R_CRC, MB_E_SHORT);
		return -1;
	}
	loop_timer_at(b->loop, &b->timer, b->deadline);
	return -1;
}

static bool same_line(const struct mb_link_conf *a, const struct mb_link_conf *c)
{
	return a->baud == c->baud && a->parity == c->parity && a->data_bits == c->data_bits &&
	       a->stop_bits == c->stop_bits;
}

int mb_bus_get(struct loop *l, const struct mb_link_conf *c, struct mb_bus **out)
{
	struct mb_bus *b;
	char key[320];
	int64_t bits, char_us, t35_us;

	key[0] = '\0';
	if (c->proto == MB_RTU)
		snprintf(key, sizeof(key), "rtu:%s", c->path);
	else if (c->proto == MB_RTU_TCP)
		snprintf(key, sizeof(key), "rtu+tcp:%s:%s", c->host, c->port);
	for (b = shared_buses; key[0] && b; b = b->next) {
		if (b->loop == l && !strcmp(b->key, key)) {
			if (c->proto == MB_RTU && !same_line(&b->conf, c))
				return -EINVAL;
			b->refs++;
			*out = b;
			return 0;
		}
	}
	b = xcalloc(1, sizeof(*b));
	if (!b)
		return -ENOMEM;
	b->loop = l;
	b->refs = 1;
	b->fdw.fd = -1;
	b->fdw.cb = bus_fd_cb;
	b->timer.cb = bus_timer;
	b->kick.cb = bus_kick;
	b->conf = *c;
	b->conf.host = c->host ? xstrdup(c->host) : NULL;
	b->conf.port = c->port ? xstrdup(c->port) : NULL;
	b->conf.path = c->path ? xstrdup(c->path) : NULL;
	b->key = key[0] ? xstrdup(key) : NULL;
	if ((c->host && !b->conf.host) || (c->port && !b->conf.port) || (c->path && !b->conf.path) ||
	    (key[0] && !b->key)) {
		mb_link_conf_release(&b->conf);
		xfree(b->key);
		xfree(b);
		return -ENOMEM;
	}
	/* One character: start, data, parity, stop bits. The spec fixes
	 * 1.75 ms above 19200 baud. */
	bits = 1 + c->data_bits + (c->parity != MB_PAR_NONE) + c->stop_bits;
	char_us = c->baud > 0 ? bits * 1000000 / c->baud : 1000;
	t35_us = c->baud > 19200 ? 1750 : char_us * 7 / 2;
	b->silence_ms = (t35_us + 999) / 1000;
	b->gap_ms = b->silence_ms + RTU_GAP_SLACK_MS;
	snprintf(b->why, sizeof(b->why), "not connected yet");
	if (b->key) {
		b->next = shared_buses;
		shared_buses = b;
	}
	*out = b;
	return 0;
}

void mb_bus_put(struct mb_bus *b)
{
	struct mb_bus **p;

	if (!b || --b->refs > 0)
		return;
	for (p = &shared_buses; *p; p = &(*p)->next) {
		if (*p == b) {
			*p = b->next;
			break;
		}
	}
	loop_timer_cancel(b->loop, &b->timer);
	loop_timer_cancel(b->loop, &b->kick);
	bus_close(b, NULL, 0);
	mb_link_conf_release(&b->conf);
	xfree(b->key);
	xfree(b);
}

void mb_bus_submit(struct mb_bus *b, struct mb_xact *x)
{
	x->bus = b;
	x->next = NULL;
	x->queued = true;
	if (b->tail)
		b->tail->next = x;
	else
		b->head = x;
	b->tail = x;
	if (!b->busy)
		loop_timer_set(b->loop, &b->kick, 0);
}

void mb_bus_cancel(struct mb_bus *b, struct mb_xact *x)
{
	struct mb_xact **p, *prev = NULL;

	if (b->cur == x) {
		/* The answer is still awaited, to keep the line in step. */
		b->cur = NULL;
		x->bus = NULL;
		return;
	}
	for (p = &b->head; *p; prev = *p, p = &(*p)->next) {
		if (*p == x) {
			*p = x->next;
			if (b->tail == x)
				b->tail = prev;
			break;
		}
	}
	x->queued = false;
	x->bus = NULL;
}

bool mb_bus_connected(const struct mb_bus *b)
{
	return b->connected;
}

const char *mb_bus_why(const struct mb_bus *b)
{
	return b->why;
}
