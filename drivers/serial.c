/* serial.c - the serial input driver: line-oriented devices on a serial
 * port (GPS receivers printing NMEA, sensors printing CSV or text), one
 * record per line.
 *
 * The port is opened non-blocking and set to raw mode with the configured
 * speed, character size, parity, stop bits and flow control; the loop
 * wakes the driver when bytes arrive, and struct lines frames them (CR LF
 * or LF; an over-long line is dead-lettered with its head). A serial line
 * cannot be read again, so the core keeps copies of the records of a
 * commit until it is durable (DRIVER_REPLAY).
 *
 * USB adapters come and go: when the device hangs up, a read fails or its
 * path vanishes, the port is closed, the line it was in the middle of is
 * dead-lettered with the reason, and a timer tries to open the path again
 * (with backoff), never blocking the loop. Status says why it is not
 * connected in words a field engineer can act on.
 *
 * Keys: a serial line has no offsets to name its data by, so each line is
 * numbered; the number is saved as the input's position in the
 * transaction of its records and continued after a restart. The series
 * (the wall clock when numbering began) keeps keys distinct even if the
 * queue, and with it the saved number, is ever lost.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include "driver.h"

/* Bytes read from the port per wake-up at most, so a fast device cannot
 * hold the loop; the rest is read on the next turn. */
#define READ_BUDGET (64 << 10)
#define READ_CHUNK 4096
/* A queue error (not a full queue): hand the line over again after this. */
#define RETRY_MS 1000

enum { FLOW_NONE, FLOW_RTSCTS, FLOW_XONXOFF };
enum { PAR_NONE, PAR_EVEN, PAR_ODD };

static const char *const parity_names[] = { "none", "even", "odd", NULL };
static const char *const flow_names[] = { "none", "rtscts", "xonxoff", NULL };

struct serial_conf {
	char *device;
	int64_t baud, data_bits, stop_bits;
	int parity, flow;
	int64_t reopen_ms, reopen_max_ms;
	char *header;
};

#define SK(f) offsetof(struct serial_conf, f)
static const struct cfg_key serial_keys[] = {
	{ .name = "device", .type = CFG_STR, .offset = SK(device), .required = true,
	  .example = "/dev/serial/by-id/usb-u-blox_AG_GNSS_receiver-if00",
	  .help = "The serial port: /dev/ttyUSB0, /dev/ttyACM0, /dev/ttyAMA0, ... Prefer the stable name "
		  "under /dev/serial/by-id/, which stays the same when the adapter is plugged into another "
		  "USB port or the ports are numbered anew." },
	{ .name = "baud", .type = CFG_INT, .def = "9600", .offset = SK(baud), .min = 50, .max = 4000000,
	  .help = "The line's speed: a standard rate (50, 75, 110, 134, 150, 200, 300, 600, 1200, 1800, "
		  "2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400, 460800, 500000, 576000, 921600, "
		  "1000000, 1152000, 1500000, 2000000, 2500000, 3000000, 3500000, 4000000). NMEA 0183 is "
		  "4800; most GPS modules ship at 9600." },
	{ .name = "data_bits", .type = CFG_INT, .def = "8", .offset = SK(data_bits), .min = 5, .max = 8,
	  .help = "Bits per character, 5 to 8." },
	{ .name = "parity", .type = CFG_ENUM, .def = "none", .offset = SK(parity), .enums = parity_names,
	  .help = "none, even or odd." },
	{ .name = "stop_bits", .type = CFG_INT, .def = "1", .offset = SK(stop_bits), .min = 1, .max = 2,
	  .help = "1 or 2." },
	{ .name = "flow_control", .type = CFG_ENUM, .def = "none", .offset = SK(flow), .enums = flow_names,
	  .help = "none, rtscts (hardware: the RTS and CTS wires) or xonxoff (software: XON/XOFF "
		  "characters, only for text devices)." },
	{ .name = "reopen_interval", .type = CFG_DURATION, .def = "1s", .offset = SK(reopen_ms), .min = 10,
	  .max = 3600000,
	  .help = "When the device is missing or went away (unplugged), how soon it is looked for again; "
		  "doubled after each attempt that fails, up to reopen_max. Also how often an open device's "
		  "path is checked to be still there." },
	{ .name = "reopen_max", .type = CFG_DURATION, .def = "10s", .offset = SK(reopen_max_ms), .min = 10,
	  .max = 86400000,
	  .help = "The longest wait between two attempts to open a missing device." },
	{ .name = "header", .type = CFG_STR, .offset = SK(header), .example = "time,temp,humidity",
	  .help = "parser = csv: the CSV header naming the device's columns. A line equal to it (the "
		  "device printing its header again after a reset) is not a record. Unset: the first line "
		  "after each opening of the device is its header." },
	{ .name = NULL },
};

struct serial {
	struct input *in;
	const struct serial_conf *c;
	struct loop *loop;
	struct loop_fd w;
	struct loop_timer reopen_timer;  /* the device is closed: open it again */
	struct loop_timer check_timer;   /* the device is open: is its path still there? */
	struct loop_timer retry_timer;   /* a queue error: hand the lines over again */
	struct lines lf;
	bool open, watched;
	dev_t rdev;                      /* of the open device */
	bool was_open;                   /* opened once: a missing path is "gone" */
	unsigned attempts;               /* failed opens in a row */
	bool blocked;                    /* the queue refused a line: wait for resume() */
	bool closing;                    /* gone: the lines left are being handed over */
	bool flushed;                    /* the unfinished line is the one in lf */
	char partial_why[256];           /* why that line is unfinished */
	bool wants_header, need_header;  /* csv: the next line is the header */
	uint64_t series, n;              /* keys: serial:NAME:series:n */
	bool dirty;                      /* n not saved yet */
	int64_t lines;                   /* lines handed over since start */
	char settings[48];               /* "9600 8N1 rtscts" */
	char conn_why[200];
};

static const struct {
	int64_t rate;
	speed_t code;
} speeds[] = {
	{ 50, B50 }, { 75, B75 }, { 110, B110 }, { 134, B134 }, { 150, B150 }, { 200, B200 },
	{ 300, B300 }, { 600, B600 }, { 1200, B1200 }, { 1800, B1800 }, { 2400, B2400 },
	{ 4800, B4800 }, { 9600, B9600 }, { 19200, B19200 }, { 38400, B38400 },
	{ 57600, B57600 }, { 115200, B115200 }, { 230400, B230400 },
#ifdef B460800
	{ 460800, B460800 },
#endif
#ifdef B500000
	{ 500000, B500000 },
#endif
#ifdef B576000
	{ 576000, B576000 },
#endif
#ifdef B921600
	{ 921600, B921600 },
#endif
#ifdef B1000000
	{ 1000000, B1000000 },
#endif
#ifdef B1152000
	{ 1152000, B1152000 },
#endif
#ifdef B1500000
	{ 1500000, B1500000 },
#endif
#ifdef B2000000
	{ 2000000, B2000000 },
#endif
#ifdef B2500000
	{ 2500000, B2500000 },
#endif
#ifdef B3000000
	{ 3000000, B3000000 },
#endif
#ifdef B3500000
	{ 3500000, B3500000 },
#endif
#ifdef B4000000
	{ 4000000, B4000000 },
#endif
};

static bool speed_code(int64_t rate, speed_t *code)
{
	for (size_t i = 0; i < sizeof(speeds) / sizeof(speeds[0]); i++) {
		if (speeds[i].rate == rate) {
			*code = speeds[i].code;
			return true;
		}
	}
	return false;
}

static int serial_validate(const void *conf, char *err, size_t errlen)
{
	const struct serial_conf *c = conf;
	speed_t code;

	if (c->device[0] != '/') {
		snprintf(err, errlen, "key 'device': '%s' is not an absolute path (e.g. /dev/ttyUSB0)",
			 c->device);
		return -EINVAL;
	}
	if (!speed_code(c->baud, &code)) {
		snprintf(err, errlen, "key 'baud': %" PRId64 " is not a standard speed (50, 75, 110, 134, "
			 "150, 200, 300, 600, 1200, 1800, 2400, 4800, 9600, 19200, 38400, 57600, 115200, "
			 "230400, 460800, 500000, 576000, 921600, 1000000, 1152000, 1500000, 2000000, "
			 "2500000, 3000000, 3500000, 4000000)", c->baud);
		return -EINVAL;
	}
	if (c->reopen_max_ms < c->reopen_ms) {
		snprintf(err, errlen, "key 'reopen_max': %" PRId64 " ms is shorter than reopen_interval "
			 "(%" PRId64 " ms)", c->reopen_max_ms, c->reopen_ms);
		return -EINVAL;
	}
	if (c->header && !c->header[0]) {
		snprintf(err, errlen, "key 'header': empty; leave it out to take the device's first line");
		return -EINVAL;
	}
	return 0;
}

static void update_state(struct serial *s)
{
	size_t part = s->open ? lines_buffered(&s->lf) : 0;
	char tail[96] = "";

	if (s->blocked)
		snprintf(tail, sizeof(tail), ", waiting for queue space");
	else if (part)
		snprintf(tail, sizeof(tail), ", %zu byte%s of an unfinished line", part,
			 part == 1 ? "" : "s");
	if (s->open)
		input_set_state(s->in, "reading %s at %s, %" PRId64 " line%s%s", s->c->device,
				s->settings, s->lines, s->lines == 1 ? "" : "s", tail);
	else
		input_set_state(s->in, "waiting for %s (%s), %" PRId64 " line%s%s", s->c->device,
				s->settings, s->lines, s->lines == 1 ? "" : "s", tail);
}

/* ---- keys and their saved counter ------------------------------------ */

#define POSITION "lines"

static void load_counter(struct serial *s)
{
	void *data = NULL;
	size_t len = 0;
	char text[64];
	int rc = input_load_position(s->in, POSITION, &data, &len);

	if (!rc && len < sizeof(text)) {
		memcpy(text, data, len);
		text[len] = '\0';
		if (sscanf(text, "%" SCNu64 " %" SCNu64, &s->series, &s->n) == 2) {
			xfree(data);
			return;
		}
	}
	if (rc != -ENOENT)
		input_error(s->in, "saved line counter unreadable (%s): numbering lines anew",
			    rc ? strerror(-rc) : "bad format");
	xfree(data);
	s->series = (uint64_t)loop_wall_ms();
	s->n = 0;
	s->dirty = true;
}

static void save_counter(struct serial *s)
{
	char text[64];
	int n;

	if (!s->dirty)
		return;
	n = snprintf(text, sizeof(text), "%" PRIu64 " %" PRIu64, s->series, s->n);
	if (input_save_position(s->in, POSITION, text, (size_t)n) == 0)
		s->dirty = false;
}

/* ---- handing lines over ---------------------------------------------- */

static void stop_watching(struct serial *s)
{
	if (s->watched) {
		loop_fd_del(s->loop, &s->w);
		s->watched = false;
	}
}

static void start_watching(struct serial *s)
{
	int rc;

	if (!s->open || s->watched)
		return;
	rc = loop_fd_add(s->loop, &s->w);
	if (rc)
		input_error(s->in, "cannot watch %s: %s", s->c->device, strerror(-rc));
	else
		s->watched = true;
}

/* One line to the core. 0 when taken (a record, a dead letter, or the
 * header), or what input_emit() said. */
static int hand_over(struct serial *s, const struct lines_rec *r, const char *reason)
{
	char key[160];
	int rc;

	if (!reason && s->wants_header) {
		if (s->need_header) {
			rc = input_set_header(s->in, r->data, r->len);
			if (!rc)
				s->need_header = false;
			return rc;
		}
		if (s->c->header && strlen(s->c->header) == r->len &&
		    !memcmp(s->c->header, r->data, r->len))
			return 0;
	}
	snprintf(key, sizeof(key), "serial:%s:%" PRIu64 ":%" PRIu64, input_name(s->in), s->series,
		 s->n + 1);
	if (reason)
		rc = input_reject(s->in, r->data, r->len, key, reason);
	else
		rc = input_emit(s->in, r->data, r->len, key);
	if (!rc) {
		s->n++;
		s->lines++;
		s->dirty = true;
	}
	return rc;
}

static int next_line(struct serial *s, struct lines_rec *r)
{
	int got = lines_next(&s->lf, r);

	if (got == 0 && s->closing && !s->flushed) {
		s->flushed = true;
		got = lines_flush(&s->lf, r);
	}
	return got;
}

static void schedule_reopen(struct serial *s, int64_t delay);

/* Hand over the lines in the buffer (at the end of a device that went
 * away, its unfinished line too, dead-lettered). false when the queue did
 * not take them all: reading waits. */
static bool drain(struct serial *s)
{
	struct lines_rec r;
	int got, rc = 0;

	while ((got = next_line(s, &r)) > 0) {
		const char *reason = r.too_long;

		if (!reason && s->flushed)
			reason = s->partial_why;
		rc = hand_over(s, &r, reason);
		if (rc)
			break;
		lines_consume(&s->lf);
	}
	if (got < 0) {
		input_error(s->in, "the unfinished line of %s is lost: %s", s->c->device,
			    strerror(-got));
		rc = 0;
		lines_reset(&s->lf);
	}
	save_counter(s);
	if (rc == -EAGAIN) {
		s->blocked = true;
		stop_watching(s);
		return false;
	}
	if (rc) {
		input_error(s->in, "cannot queue a line of %s: %s", s->c->device, strerror(-rc));
		stop_watching(s);
		loop_timer_set(s->loop, &s->retry_timer, RETRY_MS);
		return false;
	}
	if (s->closing) {
		lines_reset(&s->lf);
		s->closing = s->flushed = false;
		schedule_reopen(s, s->c->reopen_ms);
	}
	return true;
}

/* ---- the device -------------------------------------------------------- */

static void close_device(struct serial *s)
{
	stop_watching(s);
	loop_timer_cancel(s->loop, &s->check_timer);
	if (s->open)
		close(s->w.fd);
	s->w.fd = -1;
	s->open = false;
}

/* The device went away: close it, hand over what it sent, look for it again. */
static void gone(struct serial *s, enum input_err_kind kind, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void gone(struct serial *s, enum input_err_kind kind, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(s->conn_why, sizeof(s->conn_why), fmt, ap);
	va_end(ap);
	close_device(s);
	input_set_connected(s->in, false, "%s", s->conn_why);
	input_count_error(s->in, kind, "%s", s->conn_why);
	snprintf(s->partial_why, sizeof(s->partial_why), "unfinished line: %s", s->conn_why);
	s->closing = true;
	s->flushed = false;
	s->need_header = s->wants_header && !s->c->header;
	if (!s->blocked)
		drain(s);
	update_state(s);
}

/* Words for why the device cannot be opened, for the field engineer. */
static void open_failed(struct serial *s, const char *what, int err)
{
	const char *dev = s->c->device;
	struct stat st;

	if (err == ENOENT && s->was_open) {
		snprintf(s->conn_why, sizeof(s->conn_why), "%s is gone (unplugged?)", dev);
	} else if (err == ENOENT) {
		snprintf(s->conn_why, sizeof(s->conn_why),
			 "%s does not exist (not plugged in, or another name: ls /dev/serial/by-id/)", dev);
	} else if (err == EACCES || err == EPERM) {
		struct group *g = stat(dev, &st) == 0 ? getgrgid(st.st_gid) : NULL;

		if (g)
			snprintf(s->conn_why, sizeof(s->conn_why),
				 "permission denied: add the agent's user to group %s (%s)", g->gr_name, dev);
		else
			snprintf(s->conn_why, sizeof(s->conn_why),
				 "permission denied: add the agent's user to group dialout (%s)", dev);
	} else if (err == EBUSY) {
		snprintf(s->conn_why, sizeof(s->conn_why),
			 "%s is busy: another program holds it (gpsd? ModemManager?)", dev);
	} else if (err == ENOTTY || err == EINVAL) {
		snprintf(s->conn_why, sizeof(s->conn_why), "%s is not a serial port (%s: %s)", dev, what,
			 strerror(err));
	} else {
		snprintf(s->conn_why, sizeof(s->conn_why), "cannot open %s: %s: %s", dev, what,
			 strerror(err));
	}
}

/* Open and set up the port. 0, or -errno with conn_why set. */
static int open_device(struct serial *s)
{
	const struct serial_conf *c = s->c;
	static const tcflag_t sizes[] = { CS5, CS6, CS7, CS8 };
	struct termios t, back;
	struct stat st;
	speed_t sp = B9600;
	const char *what = "open";
	int fd, err;

	speed_code(c->baud, &sp);       /* checked by validate() */
	fd = open(c->device, O_RDWR | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0) {
		err = errno;
		goto out_fail;
	}
	what = "tcgetattr";
	if (tcgetattr(fd, &t))
		goto out_close;
	cfmakeraw(&t);
	t.c_cflag &= ~(tcflag_t)(CSIZE | PARENB | PARODD | CSTOPB | CRTSCTS);
	t.c_cflag |= CLOCAL | CREAD | sizes[c->data_bits - 5];
	if (c->parity != PAR_NONE) {
		t.c_cflag |= PARENB | (c->parity == PAR_ODD ? PARODD : 0);
		t.c_iflag |= INPCK;
	}
	if (c->stop_bits == 2)
		t.c_cflag |= CSTOPB;
	t.c_iflag &= ~(tcflag_t)(IXON | IXOFF | IXANY);
	if (c->flow == FLOW_RTSCTS)
		t.c_cflag |= CRTSCTS;
	else if (c->flow == FLOW_XONXOFF)
		t.c_iflag |= IXON | IXOFF;
	/* VMIN 1: with O_NONBLOCK, no data is EAGAIN and a read of 0 is a
	 * hangup (VMIN 0 would make "nothing yet" read as 0 too). */
	t.c_cc[VMIN] = 1;
	t.c_cc[VTIME] = 0;
	what = "tcsetattr";
	if (cfsetispeed(&t, sp) || cfsetospeed(&t, sp) || tcsetattr(fd, TCSANOW, &t))
		goto out_close;
	/* tcsetattr() succeeds when any part was taken: check the speed. */
	what = "tcgetattr";
	if (tcgetattr(fd, &back))
		goto out_close;
	if (cfgetispeed(&back) != sp || (back.c_cflag & (CSIZE | PARENB | PARODD | CSTOPB | CRTSCTS)) !=
	    (t.c_cflag & (CSIZE | PARENB | PARODD | CSTOPB | CRTSCTS))) {
		close(fd);
		snprintf(s->conn_why, sizeof(s->conn_why),
			 "%s refused the settings %s (the adapter cannot do them)", c->device, s->settings);
		return -EINVAL;
	}
	what = "fstat";
	if (fstat(fd, &st))
		goto out_close;
	s->rdev = st.st_rdev;
	s->w.fd = fd;
	s->open = true;
	return 0;

out_close:
	err = errno;
	close(fd);
out_fail:
	open_failed(s, what, err);
	return -err;
}

static int64_t check_cb(struct loop_timer *t)
{
	struct serial *s = container_of(t, struct serial, check_timer);
	struct stat st;

	if (!s->open)
		return -1;
	if (stat(s->c->device, &st) != 0) {
		if (errno == ENOENT || errno == ENOTDIR) {
			gone(s, INPUT_ERR_IO, "%s is gone (unplugged?)", s->c->device);
			return -1;
		}
		return s->c->reopen_ms;
	}
	if (st.st_rdev != s->rdev) {
		/* Unplugged and another device plugged in under the name. */
		gone(s, INPUT_ERR_IO, "%s now names another device (replugged?)", s->c->device);
		return -1;
	}
	return s->c->reopen_ms;
}

static void on_readable(struct loop_fd *w, unsigned revents);

static bool try_open(struct serial *s)
{
	int rc = open_device(s);

	if (rc) {
		input_set_connected(s->in, false, "%s", s->conn_why);
		input_count_error(s->in, INPUT_ERR_CONNECT, "%s", s->conn_why);
		update_state(s);
		return false;
	}
	s->was_open = true;
	s->attempts = 0;
	s->need_header = s->wants_header && !s->c->header;
	s->w.events = LOOP_READ;
	s->w.cb = on_readable;
	input_set_connected(s->in, true, "%s", "");
	input_clear_error(s->in);
	if (!s->blocked)
		start_watching(s);
	loop_timer_set(s->loop, &s->check_timer, s->c->reopen_ms);
	update_state(s);
	return true;
}

static int64_t reopen_cb(struct loop_timer *t)
{
	struct serial *s = container_of(t, struct serial, reopen_timer);

	if (s->open)
		return -1;
	if (s->closing)             /* still handing over the old lines */
		return s->c->reopen_ms;
	if (try_open(s))
		return -1;
	return backoff_delay(s->c->reopen_ms, s->c->reopen_max_ms, ++s->attempts);
}

static void schedule_reopen(struct serial *s, int64_t delay)
{
	if (!s->open && !s->reopen_timer.armed)
		loop_timer_set(s->loop, &s->reopen_timer, delay);
}

static void on_readable(struct loop_fd *w, unsigned revents)
{
	struct serial *s = container_of(w, struct serial, w);
	size_t total = 0;

	if (!drain(s))
		return;
	while (s->open && total < READ_BUDGET) {
		size_t avail;
		char *p = lines_space(&s->lf, READ_CHUNK, &avail);
		ssize_t n;

		if (!p) {
			input_error(s->in, "out of memory reading %s: trying again", s->c->device);
			return;
		}
		n = read(s->w.fd, p, avail < READ_CHUNK ? avail : READ_CHUNK);
		if (n > 0) {
			lines_added(&s->lf, (size_t)n);
			total += (size_t)n;
			if (!drain(s))
				break;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			/* Hung up with nothing left to read. */
			if (revents & LOOP_ERROR)
				gone(s, INPUT_ERR_IO, "%s hung up (unplugged?)", s->c->device);
			break;
		}
		if (n == 0)
			gone(s, INPUT_ERR_IO, "%s hung up (unplugged?)", s->c->device);
		else
			gone(s, INPUT_ERR_IO, "%s is gone (unplugged?): read: %s", s->c->device,
			     strerror(errno));
		return;
	}
	update_state(s);
}

static int64_t retry_cb(struct loop_timer *t)
{
	struct serial *s = container_of(t, struct serial, retry_timer);

	if (drain(s) && s->open) {
		start_watching(s);
		update_state(s);
	}
	return -1;
}

/* ---- the driver -------------------------------------------------------- */

static void serial_stop(struct input *in, void *state)
{
	struct serial *s = state;
	size_t left;

	if (!s)
		return;
	left = lines_buffered(&s->lf);
	if (left)
		input_error(in, "stopped with %zu bytes of %s not handed over (an unfinished line)", left,
			    s->c->device);
	close_device(s);
	loop_timer_cancel(s->loop, &s->reopen_timer);
	loop_timer_cancel(s->loop, &s->retry_timer);
	lines_release(&s->lf);
	xfree(s);
}

static int serial_start(struct input *in, void **state)
{
	struct serial *s = xcalloc(1, sizeof(*s));
	const struct serial_conf *c;
	int rc;

	if (!s)
		return -ENOMEM;
	s->in = in;
	s->c = c = input_driver_conf(in);
	s->loop = input_loop(in);
	s->w.fd = -1;
	s->reopen_timer.cb = reopen_cb;
	s->check_timer.cb = check_cb;
	s->retry_timer.cb = retry_cb;
	lines_init(&s->lf, (size_t)input_max_record_bytes(in));
	s->lf.strip_cr = true;
	snprintf(s->settings, sizeof(s->settings), "%" PRId64 " %" PRId64 "%c%" PRId64 "%s", c->baud,
		 c->data_bits, "NEO"[c->parity], c->stop_bits,
		 c->flow == FLOW_RTSCTS ? " rtscts" : c->flow == FLOW_XONXOFF ? " xonxoff" : "");
	s->wants_header = input_wants_header(in);
	if (s->wants_header && c->header) {
		rc = input_set_header(in, c->header, strlen(c->header));
		if (rc) {
			serial_stop(in, s);
			return rc;
		}
	}
	load_counter(s);
	if (!try_open(s))
		schedule_reopen(s, backoff_delay(c->reopen_ms, c->reopen_max_ms, ++s->attempts));
	*state = s;
	return 0;
}

static void serial_resume(struct input *in, void *state)
{
	struct serial *s = state;

	s->blocked = false;
	/* After a failed commit the saved counter may be gone with it. */
	s->dirty = true;
	if (drain(s) && s->open) {
		start_watching(s);
		/* Bytes that arrived meanwhile wake the watch (level-triggered). */
	}
	update_state(s);
}

const struct driver serial_driver = {
	.version = DRIVER_VERSION,
	.name = "serial",
	.help = "Reads lines from a serial port (GPS receivers printing NMEA, sensors printing CSV or "
		"text), one record per line; reopens the device after it was unplugged.",
	.flags = DRIVER_REPLAY,
	.conf_keys = serial_keys,
	.conf_size = sizeof(struct serial_conf),
	.validate = serial_validate,
	.start = serial_start,
	.resume = serial_resume,
	.stop = serial_stop,
};
