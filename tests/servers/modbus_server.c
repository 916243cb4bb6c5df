/* modbus_server.c - a Modbus slave for the tests, on Debian's libmodbus:
 * serves a known register map over TCP on a port or over RTU on a tty, and
 * misbehaves on request. Built only for the tests (never part of agentd).
 *
 *   modbus_server --tcp PORT [--unit N] [--control FILE] [--fault F]...
 *   modbus_server --rtu TTY [--baud B] [--parity N|E|O] [--unit N] ...
 *
 * Faults (each a --fault argument, or a line of the control file, which is
 * read again before every answer so a test changes them while it runs):
 *   exception FUNC FIRST LAST CODE  a read of FUNC touching FIRST..LAST gets exception CODE
 *   delay MS                        answer MS milliseconds late
 *   drop                            do not answer at all
 *   crc                             RTU: a wrong CRC; TCP: a wrong byte count
 *   garbage                         answer bytes that are no Modbus frame
 * It prints "ready" on stdout once it listens. The map is in fill_map();
 * tests/integration/test_modbus.py knows the same values.
 */
#include <errno.h>
#include <modbus.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_FAULTS 32

struct fault {
	char kind[16];
	int func, first, last, code, ms;
};

static struct fault cmdline[MAX_FAULTS], faults[MAX_FAULTS];
static int n_cmdline, n_faults;
static const char *control;

static int parse_fault(const char *line, struct fault *f)
{
	memset(f, 0, sizeof(*f));
	if (sscanf(line, "%15s", f->kind) != 1 || f->kind[0] == '#')
		return -1;
	if (!strcmp(f->kind, "exception"))
		return sscanf(line, "%*s %d %d %d %d", &f->func, &f->first, &f->last, &f->code) == 4 ? 0 : -1;
	if (!strcmp(f->kind, "delay"))
		return sscanf(line, "%*s %d", &f->ms) == 1 ? 0 : -1;
	if (!strcmp(f->kind, "drop") || !strcmp(f->kind, "crc") || !strcmp(f->kind, "garbage"))
		return 0;
	return -1;
}

static void load_faults(void)
{
	char line[256];
	FILE *fp;

	memcpy(faults, cmdline, sizeof(faults));
	n_faults = n_cmdline;
	if (!control || !(fp = fopen(control, "r")))
		return;
	while (n_faults < MAX_FAULTS && fgets(line, sizeof(line), fp))
		if (!parse_fault(line, &faults[n_faults]))
			n_faults++;
	fclose(fp);
}

static const struct fault *find(const char *kind)
{
	for (int i = 0; i < n_faults; i++)
		if (!strcmp(faults[i].kind, kind))
			return &faults[i];
	return NULL;
}

static void put_f32(uint16_t *r, float v, const char *order)
{
	uint8_t b[4], w[4];
	uint32_t u;

	memcpy(&u, &v, 4);
	b[0] = (uint8_t)(u >> 24), b[1] = (uint8_t)(u >> 16), b[2] = (uint8_t)(u >> 8), b[3] = (uint8_t)u;
	for (int i = 0; i < 4; i++)
		w[i] = b[order[i] - 'A'];
	r[0] = (uint16_t)(w[0] << 8 | w[1]);
	r[1] = (uint16_t)(w[2] << 8 | w[3]);
}

static void put_u64(uint16_t *r, uint64_t u, int words)
{
	for (int i = 0; i < words; i++)
		r[i] = (uint16_t)(u >> (16 * (words - 1 - i)));
}

/* The known map (0-based protocol addresses). */
static void fill_map(modbus_mapping_t *m)
{
	uint16_t *h = m->tab_registers, *in = m->tab_input_registers;
	double d;
	uint64_t u;

	h[0] = 1234;                            /* uint16 */
	h[1] = (uint16_t)-1234;                 /* int16 */
	put_u64(h + 2, 0x12345678u, 2);         /* uint32 ABCD */
	put_u64(h + 4, (uint32_t)-123456, 2);   /* int32 ABCD */
	put_f32(h + 6, 230.5f, "ABCD");
	put_f32(h + 8, 230.5f, "CDAB");
	put_f32(h + 10, 230.5f, "BADC");
	put_f32(h + 12, 230.5f, "DCBA");
	put_u64(h + 14, 0x0102030405060708ull, 4); /* uint64 ABCD */
	put_u64(h + 18, (uint64_t)-5, 4);       /* int64 ABCD */
	d = -1.5;
	memcpy(&u, &d, 8);
	put_u64(h + 22, u, 4);                  /* float64 ABCD */
	d = 12345.678;
	memcpy(&u, &d, 8);
	/* float64 CDAB: the four registers in reverse order. */
	for (int i = 0; i < 4; i++)
		h[26 + i] = (uint16_t)(u >> (16 * i));
	h[30] = 'S' << 8 | 'D';                 /* string "SDM630" */
	h[31] = 'M' << 8 | '6';
	h[32] = '3' << 8 | '0';
	h[33] = 0x0205;                         /* bits 0, 2, 9 */
	h[34] = 2305;                           /* int16, scale 0.1 offset -40: 190.5 */
	h[35] = 0x7856, h[36] = 0x3412;         /* uint32 DCBA 0x12345678 */
	h[37] = 0x3412, h[38] = 0x7856;         /* uint32 BADC 0x12345678 */
	for (int i = 100; i < 120; i++)
		h[i] = (uint16_t)(i * 10);      /* uint16 100..119 = 1000..1190 */

	/* Input registers as an energy meter has them (float32 ABCD). */
	put_f32(in + 0, 230.5f, "ABCD");        /* voltage L1 */
	put_f32(in + 6, 5.25f, "ABCD");         /* current L1 */
	put_f32(in + 12, 1210.125f, "ABCD");    /* active power L1 */
	put_f32(in + 342, 12345.5f, "ABCD");    /* total active energy */

	for (int i = 0; i < 10; i++) {
		m->tab_bits[i] = (uint8_t)(i % 3 == 0);       /* coils 0, 3, 6, 9 on */
		m->tab_input_bits[i] = (uint8_t)(i % 2 == 1); /* inputs 1, 3, 5, ... on */
	}
}

static void sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

/* A well-formed answer built by hand, so it can be damaged. */
static int reply_damaged(modbus_t *ctx, int fd, const uint8_t *req, int hl, bool rtu,
			 modbus_mapping_t *m)
{
	uint8_t out[300];
	int func = req[hl], addr = req[hl + 1] << 8 | req[hl + 2], cnt = req[hl + 3] << 8 | req[hl + 4];
	int n = 0, bytes;

	if (rtu) {
		out[n++] = req[0];
	} else {
		memcpy(out, req, 7);
		n = 7;
	}
	out[n++] = (uint8_t)func;
	bytes = func <= 2 ? (cnt + 7) / 8 : cnt * 2;
	out[n++] = (uint8_t)(rtu ? bytes : bytes + 2);  /* TCP: a byte count that lies */
	for (int i = 0; i < bytes && n < 290; i++) {
		uint16_t r = 0;

		if (func >= 3) {
			uint16_t *t = func == 3 ? m->tab_registers : m->tab_input_registers;
			int a = addr + i / 2;

			r = a < 400 ? t[a] : 0;
			out[n++] = (uint8_t)(i % 2 ? r : r >> 8);
		} else {
			out[n++] = 0;
		}
	}
	if (rtu) {
		/* CRC-16/MODBUS, then damaged. */
		uint16_t crc = 0xffff;

		for (int i = 0; i < n; i++) {
			crc ^= out[i];
			for (int b = 0; b < 8; b++)
				crc = crc & 1 ? (uint16_t)((crc >> 1) ^ 0xa001) : (uint16_t)(crc >> 1);
		}
		crc ^= 0x5a5a;
		out[n++] = (uint8_t)crc;
		out[n++] = (uint8_t)(crc >> 8);
	} else {
		out[4] = (uint8_t)((n - 6) >> 8);
		out[5] = (uint8_t)(n - 6);
	}
	(void)ctx;
	return write(fd, out, (size_t)n) == n ? 0 : -1;
}

static void answer(modbus_t *ctx, int fd, const uint8_t *req, int len, bool rtu, modbus_mapping_t *m)
{
	int hl = modbus_get_header_length(ctx);
	int func = req[hl], addr = req[hl + 1] << 8 | req[hl + 2], cnt = req[hl + 3] << 8 | req[hl + 4];
	const struct fault *f;

	load_faults();
	if ((f = find("delay")))
		sleep_ms(f->ms);
	if (find("drop"))
		return;
	if (find("garbage")) {
		static const char junk[] = "\x7f\xee garbage, no frame \r\n";

		if (write(fd, junk, sizeof(junk) - 1) < 0)
			perror("write");
		return;
	}
	for (int i = 0; i < n_faults; i++) {
		f = &faults[i];
		if (!strcmp(f->kind, "exception") && f->func == func &&
		    addr <= f->last && addr + cnt - 1 >= f->first) {
			modbus_reply_exception(ctx, req, (unsigned)f->code);
			return;
		}
	}
	if (find("crc") && func >= 1 && func <= 4) {
		reply_damaged(ctx, fd, req, hl, rtu, m);
		return;
	}
	modbus_reply(ctx, req, len, m);
}

static uint16_t crc16(const uint8_t *p, int n)
{
	uint16_t crc = 0xffff;

	for (int i = 0; i < n; i++) {
		crc ^= p[i];
		for (int b = 0; b < 8; b++)
			crc = crc & 1 ? (uint16_t)((crc >> 1) ^ 0xa001) : (uint16_t)(crc >> 1);
	}
	return crc;
}

/* RTU: requests are read here rather than by modbus_receive(), which after
 * a request for another unit sleeps and flushes the line, dropping the next
 * unit's request as no real device on a shared line would. Read requests
 * are 8 bytes; a frame ends when the line is silent for 20 ms. */
static void rtu_serve(modbus_t *ctx, int unit, modbus_mapping_t *m)
{
	int fd = modbus_get_socket(ctx);
	uint8_t req[260];
	int len = 0;

	for (;;) {
		struct timeval tv = { 0, 20000 };
		fd_set rd;
		int r;

		FD_ZERO(&rd);
		FD_SET(fd, &rd);
		r = select(fd + 1, &rd, NULL, NULL, len ? &tv : NULL);
		if (r < 0)
			continue;
		if (r > 0) {
			ssize_t n = read(fd, req + len, sizeof(req) - (size_t)len);

			if (n > 0)
				len += (int)n;
			if (len < 8 && len < (int)sizeof(req))
				continue;
		}
		if (len >= 8) {
			uint16_t crc = crc16(req, 6);

			if (req[0] == unit && req[6] == (uint8_t)crc && req[7] == (uint8_t)(crc >> 8))
				answer(ctx, fd, req, 8, true, m);
		}
		len = 0;        /* answered, not ours, damaged, or silent */
	}
}

static void usage(void)
{
	fprintf(stderr, "usage: modbus_server --tcp PORT | --rtu TTY [--baud B] [--parity N|E|O] "
			"[--unit N] [--control FILE] [--fault F]...\n");
	exit(2);
}

int main(int argc, char **argv)
{
	const char *tcp = NULL, *tty = NULL;
	int baud = 19200, unit = 1;
	char parity = 'N';
	modbus_mapping_t *m;
	modbus_t *ctx;
	uint8_t req[MODBUS_RTU_MAX_ADU_LENGTH > MODBUS_TCP_MAX_ADU_LENGTH ?
		    MODBUS_RTU_MAX_ADU_LENGTH : MODBUS_TCP_MAX_ADU_LENGTH];

	for (int i = 1; i < argc; i++) {
		if (i + 1 >= argc)
			usage();
		if (!strcmp(argv[i], "--tcp"))
			tcp = argv[++i];
		else if (!strcmp(argv[i], "--rtu"))
			tty = argv[++i];
		else if (!strcmp(argv[i], "--baud"))
			baud = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--parity"))
			parity = argv[++i][0];
		else if (!strcmp(argv[i], "--unit"))
			unit = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--control"))
			control = argv[++i];
		else if (!strcmp(argv[i], "--fault") && n_cmdline < MAX_FAULTS) {
			if (parse_fault(argv[++i], &cmdline[n_cmdline++]))
				usage();
		} else
			usage();
	}
	if (!tcp == !tty)
		usage();
	m = modbus_mapping_new(100, 100, 400, 400);
	if (!m)
		return 1;
	fill_map(m);

	if (tty) {
		ctx = modbus_new_rtu(tty, baud, parity, 8, 1);
		if (!ctx || modbus_set_slave(ctx, unit) || modbus_connect(ctx)) {
			fprintf(stderr, "modbus_server: %s: %s\n", tty, modbus_strerror(errno));
			return 1;
		}
		printf("ready\n");
		fflush(stdout);
		rtu_serve(ctx, unit, m);
	}

	ctx = modbus_new_tcp("127.0.0.1", atoi(tcp));
	int lfd = ctx ? modbus_tcp_listen(ctx, 8) : -1;
	if (lfd < 0) {
		fprintf(stderr, "modbus_server: port %s: %s\n", tcp, modbus_strerror(errno));
		return 1;
	}
	printf("ready\n");
	fflush(stdout);
	fd_set all;
	int maxfd = lfd;

	FD_ZERO(&all);
	FD_SET(lfd, &all);
	for (;;) {
		fd_set rd = all;

		if (select(maxfd + 1, &rd, NULL, NULL, NULL) < 0)
			continue;
		for (int fd = 0; fd <= maxfd; fd++) {
			if (!FD_ISSET(fd, &rd))
				continue;
			if (fd == lfd) {
				int c = accept(lfd, NULL, NULL);

				if (c >= 0) {
					FD_SET(c, &all);
					if (c > maxfd)
						maxfd = c;
				}
				continue;
			}
			modbus_set_socket(ctx, fd);
			int n = modbus_receive(ctx, req);

			if (n > 0) {
				answer(ctx, fd, req, n, false, m);
			} else if (n < 0) {
				close(fd);
				FD_CLR(fd, &all);
			}
		}
	}
}
