/* modbus.c - the Modbus input driver: polls one device (a url and a unit
 * id) for the registers of its map, one record per poll of each group of
 * registers, on absolute deadlines.
 *
 * The map's entries are merged into few read requests (modbus_proto.c's
 * planning); a device that refuses a merged request with exception 2 has it
 * split until the good registers read again, and the refused ones are
 * remembered, shipped as null with their quality, shown in status, and
 * tried again only every refused_retry polls. Each request has a timeout
 * and retries; a reading that failed ships as null with why ("timeout",
 * "crc", "exception 2", ...) instead of vanishing. A device that does not
 * answer at all backs off on its own; requests of other devices on the same
 * bus go on (modbus_link.c queues them one at a time).
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "modbus.h"


struct mb_row {
	char *name;
	int function;           /* index into func_names: 0 coil .. 3 input */
	int64_t address;
	int type;               /* index into type_names: 0 auto, then enum mb_type + 1 */
	int order;
	char *scale, *offset;
	char *unit;
	int64_t bit, count;
	char *group;
	int64_t interval_ms;
};

struct modbus_conf {
	char *url;
	int64_t unit;
	int64_t baud;
	int parity;
	int64_t data_bits, stop_bits;
	int64_t interval_ms, timeout_ms;
	int64_t retries, max_gap, refused_retry;
	int64_t retry_base_ms, retry_max_ms;
	struct cfg_table registers;
};

static const char *const func_names[] = { "coil", "discrete", "holding", "input", NULL };
static const char *const type_names[] = {
	"auto", "bool", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32",
	"float64", "string", "bit", NULL,
};
static const char *const order_names[] = { "abcd", "dcba", "badc", "cdab", NULL };
static const char *const parity_names[] = { "none", "even", "odd", NULL };

#define RK(f) offsetof(struct mb_row, f)
static const struct cfg_key row_cols[] = {
	{ .name = "name", .type = CFG_STR, .offset = RK(name), .required = true,
	  .help = "The value's name in the record." },
	{ .name = "function", .type = CFG_ENUM, .def = "holding", .offset = RK(function), .enums = func_names,
	  .help = "What is read: coil (function 1), discrete (discrete input, 2), holding (holding "
		  "register, 3) or input (input register, 4)." },
	{ .name = "address", .type = CFG_INT, .offset = RK(address), .min = 0, .max = 65535, .required = true,
	  .help = "The protocol address, counted from 0 (register 30001 of a meter's manual is input "
		  "address 0, 40001 holding address 0)." },
	{ .name = "type", .type = CFG_ENUM, .def = "auto", .offset = RK(type), .enums = type_names,
	  .help = "How the registers are read: bool, int16, uint16, int32, uint32, int64, uint64, float32, "
		  "float64, string (count registers of text) or bit (one bit of a register, see bit); auto "
		  "is bool for coils and discrete inputs, uint16 for registers." },
	{ .name = "order", .type = CFG_ENUM, .def = "abcd", .offset = RK(order), .enums = order_names,
	  .help = "Byte order of values longer than a byte, A the most significant: abcd (big-endian, the "
		  "standard), dcba (little-endian), badc (bytes swapped in each register), cdab (registers "
		  "swapped)." },
	{ .name = "scale", .type = CFG_STR, .def = "1", .offset = RK(scale),
	  .help = "The value shipped is value * scale + offset (a decimal number)." },
	{ .name = "offset", .type = CFG_STR, .def = "0", .offset = RK(offset),
	  .help = "See scale." },
	{ .name = "unit", .type = CFG_STR, .offset = RK(unit),
	  .help = "The value's unit (V, A, kWh, ...), shipped in the record's units." },
	{ .name = "bit", .type = CFG_INT, .def = "0", .offset = RK(bit), .min = 0, .max = 15,
	  .help = "type = bit: which bit of the register, 0 the least significant." },
	{ .name = "count", .type = CFG_INT, .def = "0", .offset = RK(count), .min = 0, .max = 125,
	  .help = "type = string: how many registers (two characters each). Other types know their size." },
	{ .name = "group", .type = CFG_STR, .offset = RK(group),
	  .help = "Registers of one group are read together and shipped in one record (with \"group\"); "
		  "each group may have its own interval. Without: the device's group." },
	{ .name = "interval", .type = CFG_DURATION, .def = "0", .offset = RK(interval_ms), .min = 0,
	  .max = 86400000,
	  .help = "The group's poll interval; 0: the device's interval." },
	{ .name = NULL },
};

#define MK(f) offsetof(struct modbus_conf, f)
static const struct cfg_key modbus_keys[] = {
	{ .name = "url", .type = CFG_STR, .offset = MK(url), .required = true,
	  .example = "tcp://192.168.1.20:502",
	  .help = "The device: tcp://host[:port] (Modbus TCP, port 502 by default), rtu:///dev/ttyUSB0 (RTU "
		  "on a serial line) or rtu+tcp://host:port (RTU through a serial-to-Ethernet converter). "
		  "Use an IP address: a host name is looked up by the system and may stall the agent." },
	{ .name = "unit", .type = CFG_INT, .def = "1", .offset = MK(unit), .min = 0, .max = 255,
	  .help = "The unit id (slave address) of the device; 1-247 on a serial line." },
	{ .name = "baud", .type = CFG_INT, .def = "19200", .offset = MK(baud), .min = 1200, .max = 230400,
	  .help = "rtu://: the line's speed (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400)." },
	{ .name = "parity", .type = CFG_ENUM, .def = "none", .offset = MK(parity), .enums = parity_names,
	  .help = "rtu://: none, even or odd." },
	{ .name = "data_bits", .type = CFG_INT, .def = "8", .offset = MK(data_bits), .min = 7, .max = 8,
	  .help = "rtu://: 7 or 8." },
	{ .name = "stop_bits", .type = CFG_INT, .def = "1", .offset = MK(stop_bits), .min = 1, .max = 2,
	  .help = "rtu://: 1 or 2." },
	{ .name = "interval", .type = CFG_DURATION, .def = "10s", .offset = MK(interval_ms), .min = 100,
	  .max = 86400000,
	  .help = "How often the registers are read, on absolute deadlines (groups may have their own)." },
	{ .name = "timeout", .type = CFG_DURATION, .def = "1s", .offset = MK(timeout_ms), .min = 10,
	  .max = 60000,
	  .help = "How long one request waits for its answer (a connect too)." },
	{ .name = "retries", .type = CFG_INT, .def = "1", .offset = MK(retries), .min = 0, .max = 10,
	  .help = "How often a request that timed out or came back damaged is sent again before its "
		  "values ship as null." },
	{ .name = "max_gap", .type = CFG_INT, .def = "10", .offset = MK(max_gap), .min = 0, .max = 2000,
	  .help = "Registers (or bits) of the same function are read in one request when at most this "
		  "many unused ones lie between them." },
	{ .name = "refused_retry", .type = CFG_INT, .def = "100", .offset = MK(refused_retry), .min = 1,
	  .max = 1000000,
	  .help = "Registers the device refused (exception 2) are asked for again every this many polls, "
		  "in case its map changed." },
	{ .name = "retry_base", .type = CFG_DURATION, .def = "1s", .offset = MK(retry_base_ms), .min = 10,
	  .max = 3600000,
	  .help = "A device that does not answer a whole poll is left alone for this long, doubled at each "
		  "poll that fails again ..." },
	{ .name = "retry_max", .type = CFG_DURATION, .def = "5m", .offset = MK(retry_max_ms), .min = 10,
	  .max = 86400000,
	  .help = "... up to this long." },
	{ .name = "register", .type = CFG_TABLE, .offset = MK(registers), .cols = row_cols,
	  .row_size = sizeof(struct mb_row), .required = true,
	  .example = "name=voltage function=input address=0 type=float32 unit=V",
	  .help = "One line per value of the register map, as words column=value (columns below)." },
	{ .name = NULL },
};

struct mb_group;

struct modbus {
	struct input *in;
	const struct modbus_conf *c;
	struct loop *loop;
	struct mb_link_conf link;
	struct mb_bus *bus;
	struct mb_xact x;
	struct mb_group *groups;
	size_t n_groups;
	struct mb_group *active;        /* the group whose poll is running */
	unsigned attempt;               /* polls without any answer in a row */
	int64_t quiet_until;            /* backing off until (monotonic) */
	bool blocked;
	bool answered;                  /* this poll got an answer */
	int last_fail;                  /* this poll's last failure (enum mb_result) */
	char state_shown[256];
};

struct mb_group {
	struct modbus *m;
	const char *name;               /* NULL: the device's group */
	int64_t interval_ms;
	struct mb_entry *e;
	size_t n;
	struct mb_req *reqs;
	size_t n_reqs;
	struct mb_value *vals;
	const char **quality;           /* per entry: NULL read fine */
	char (*qbuf)[16];
	struct loop_timer timer;
	int64_t seen_missed;
	bool due;
	bool replan;
	uint64_t polls;
	bool with_refused;              /* this poll asks refused entries again */
	size_t cur;                     /* request in flight */
	int64_t tries;
	bool have_time;
	struct sample_time t;
	char key[160];
};

static double parse_num(const char *s, bool *ok)
{
	char *end;
	double d;

	errno = 0;
	d = strtod(s, &end);
	*ok = s[0] && !*end && !errno && isfinite(d);
	return d;
}

static const char *exc_name(int code)
{
	switch (code) {
	case 1: return "illegal function";
	case 2: return "illegal data address";
	case 3: return "illegal data value";
	case 4: return "server device failure";
	case 5: return "acknowledge";
	case 6: return "server device busy";
	case 10: return "gateway path unavailable";
	case 11: return "gateway target device failed to respond";
	default: return "exception";
	}
}

static int row_type(const struct mb_row *r)
{
	if (r->type == 0)
		return r->function <= 1 ? MB_T_BOOL : MB_T_UINT16;
	return r->type - 1;
}

static const char *row_group(const struct mb_row *r)
{
	return r->group && r->group[0] ? r->group : NULL;
}

static bool same_group(const char *a, const char *b)
{
	return (!a && !b) || (a && b && !strcmp(a, b));
}

static int modbus_validate(const void *conf, char *err, size_t errlen)
{
	const struct modbus_conf *c = conf;
	struct mb_link_conf link;
	int rc;

	if (!c->url) {
		snprintf(err, errlen, "key 'url': missing");
		return -EINVAL;
	}
	rc = mb_url_parse(c->url, &link, err, errlen);
	mb_link_conf_release(&link);
	if (rc)
		return rc;
	if (c->baud != 1200 && c->baud != 2400 && c->baud != 4800 && c->baud != 9600 && c->baud != 19200 &&
	    c->baud != 38400 && c->baud != 57600 && c->baud != 115200 && c->baud != 230400) {
		snprintf(err, errlen, "key 'baud': %" PRId64 " is not a standard speed (1200 ... 230400)",
			 c->baud);
		return -EINVAL;
	}
	if (!c->registers.n) {
		snprintf(err, errlen, "key 'register': no register given");
		return -EINVAL;
	}
	for (size_t i = 0; i < c->registers.n; i++) {
		const struct mb_row *r = CFG_ROW(&c->registers, struct mb_row, i);
		int type = row_type(r);
		unsigned size = type == MB_T_STRING ? (unsigned)r->count : mb_type_regs(type);
		bool ok;

#define ROWERR(...) do { snprintf(err, errlen, "key 'register' '%s': ", r->name);            \
		size_t l_ = strlen(err); snprintf(err + l_, errlen > l_ ? errlen - l_ : 0, __VA_ARGS__); \
		return -EINVAL; } while (0)
		if (!r->name || !r->name[0])
			ROWERR("a name is needed");
		if (!strcmp(r->name, "device") || !strcmp(r->name, "group") || !strcmp(r->name, "units") ||
		    !strcmp(r->name, "quality"))
			ROWERR("the name is taken by the record itself");
		for (size_t j = 0; j < i; j++)
			if (!strcmp(CFG_ROW(&c->registers, struct mb_row, j)->name, r->name))
				ROWERR("the name is given twice");
		if (r->function <= 1 && type != MB_T_BOOL)
			ROWERR("coils and discrete inputs are read as type=bool");
		if (r->function >= 2 && type == MB_T_BOOL && r->type)
			ROWERR("a register is not a bool: use type=bit with bit=N, or uint16");
		if (type == MB_T_STRING && !r->count)
			ROWERR("type=string needs count=N (registers)");
		if (type != MB_T_STRING && r->count && r->count != (int64_t)mb_type_regs(type))
			ROWERR("type=%s takes %u registers, not count=%" PRId64, mb_type_name(type),
			       mb_type_regs(type), r->count);
		if (type != MB_T_BIT && r->bit)
			ROWERR("bit=N is for type=bit");
		if (r->address + size > 65536)
			ROWERR("address %" PRId64 " + %u registers is beyond 65535", r->address, size);
		parse_num(r->scale ? r->scale : "1", &ok);
		if (!ok)
			ROWERR("scale '%s' is not a number", r->scale);
		parse_num(r->offset ? r->offset : "0", &ok);
		if (!ok)
			ROWERR("offset '%s' is not a number", r->offset);
		for (size_t j = 0; j < i; j++) {
			const struct mb_row *o = CFG_ROW(&c->registers, struct mb_row, j);

			if (same_group(row_group(o), row_group(r)) && o->interval_ms && r->interval_ms &&
			    o->interval_ms != r->interval_ms)
				ROWERR("its group's interval is given twice, differently");
		}
#undef ROWERR
	}
	return 0;
}

static void group_plan(struct mb_group *g)
{
	g->n_reqs = mb_plan(g->e, g->n, (unsigned)g->m->c->max_gap, g->with_refused, g->reqs);
	g->replan = false;
}

static void set_state(struct modbus *m)
{
	char s[256], refused[160] = "";
	size_t regs = 0, reqs = 0, nref = 0, rl = 0;

	for (size_t i = 0; i < m->n_groups; i++) {
		struct mb_group *g = &m->groups[i];

		regs += g->n;
		reqs += g->n_reqs;
		for (size_t j = 0; j < g->n; j++) {
			if (!g->e[j].refused)
				continue;
			if (!nref++)
				rl = (size_t)snprintf(refused, sizeof(refused), "; refused (exception 2):");
			if (rl < sizeof(refused))
				rl += (size_t)snprintf(refused + rl, sizeof(refused) - rl, " %s %s@%u",
						       nref > 1 ? "," : "", g->e[j].name, g->e[j].addr);
		}
	}
	snprintf(s, sizeof(s), "polling %zu value%s in %zu request%s%s%s", regs, regs == 1 ? "" : "s",
		 reqs, reqs == 1 ? "" : "s", m->quiet_until ? ", backing off" : "", refused);
	if (strcmp(s, m->state_shown)) {
		snprintf(m->state_shown, sizeof(m->state_shown), "%s", s);
		input_set_state(m->in, "%s", s);
	}
}

static void poll_next(struct modbus *m);

static void emit_group(struct modbus *m, struct mb_group *g)
{
	struct rec *r = input_rec_begin(m->in);
	char wall[24];
	int rc;

	rec_str(r, "device", input_name(m->in));
	if (g->name)
		rec_str(r, "group", g->name);
	for (size_t i = 0; i < g->n; i++) {
		const struct mb_entry *e = &g->e[i];
		const struct mb_value *v = &g->vals[i];

		if (g->quality[i]) {
			rec_null(r, e->name, e->unit, g->quality[i]);
			continue;
		}
		switch (v->kind) {
		case MB_V_BOOL: rec_bool(r, e->name, v->b); break;
		case MB_V_INT: rec_int(r, e->name, v->i, e->unit); break;
		case MB_V_UINT: rec_uint(r, e->name, v->u, e->unit); break;
		case MB_V_NUM: rec_num(r, e->name, v->d, e->unit); break;
		default: rec_strn(r, e->name, v->s, v->slen); break;
		}
	}
	snprintf(wall, sizeof(wall), "%" PRId64, g->t.wall_ms);
	snprintf(g->key, sizeof(g->key), "modbus:%s:%s:%s", input_name(m->in), g->name ? g->name : "",
		 wall);
	rc = input_emit_rec(m->in, r, g->key, &g->t);
	if (rc == -EAGAIN) {
		m->blocked = true;
		input_count_missed(m->in, 1);
	} else if (rc) {
		input_count_missed(m->in, 1);
		input_error(m->in, "a record of %s could not be queued: %s", g->name ? g->name : "the device",
			    strerror(-rc));
	}
}

static void end_poll(struct modbus *m, struct mb_group *g)
{
	if (!m->answered && m->last_fail != MB_R_OK) {
		m->quiet_until = loop_now_ms() + backoff_delay(m->c->retry_base_ms, m->c->retry_max_ms,
							       m->attempt);
		m->attempt++;
		if (m->last_fail == MB_R_TIMEOUT)
			input_set_connected(m->in, false, "no answer from unit %" PRId64 " at %s", m->c->unit,
					    m->c->url);
		else if (m->last_fail == MB_R_CONNECT || m->last_fail == MB_R_IO)
			input_set_connected(m->in, false, "%s", mb_bus_why(m->bus));
		else
			input_set_connected(m->in, false, "no valid answer from unit %" PRId64 " at %s",
					    m->c->unit, m->c->url);
	} else {
		m->attempt = 0;
		m->quiet_until = 0;
		input_set_connected(m->in, true, "%s", "");
	}
	if (g->with_refused) {
		g->with_refused = false;
		g->replan = true;
	}
	if (g->replan)
		group_plan(g);
	emit_group(m, g);
	set_state(m);
	m->active = NULL;
	poll_next(m);
}

static void fail_req(struct mb_group *g, const struct mb_req *rq, const char *why)
{
	for (size_t i = rq->first; i < rq->first + rq->n; i++)
		g->quality[i] = why;
}

static void send_req(struct modbus *m, struct mb_group *g)
{
	const struct mb_req *rq;

	if (g->cur >= g->n_reqs) {
		end_poll(m, g);
		return;
	}
	rq = &g->reqs[g->cur];
	m->x.unit = (uint8_t)m->c->unit;
	m->x.func = rq->func;
	m->x.addr = rq->addr;
	m->x.count = rq->count;
	m->x.timeout_ms = m->c->timeout_ms;
	input_count_request(m->in);
	mb_bus_submit(m->bus, &m->x);
}

/* The sample's time: when its first request went out. */
static void note_time(struct modbus *m, struct mb_group *g)
{
	int64_t ago;

	if (g->have_time)
		return;
	input_sample_now(m->in, &g->t);
	ago = m->x.sent_ms ? loop_now_ms() - m->x.sent_ms : 0;
	if (ago > 0) {
		g->t.wall_ms -= ago;
		g->t.mono_ms -= ago;
	}
	g->have_time = true;
}

static void xact_done(struct mb_xact *x, int result)
{
	struct modbus *m = container_of(x, struct modbus, x);
	struct mb_group *g = m->active;
	struct mb_req *rq;

	if (!g)
		return;
	rq = &g->reqs[g->cur];
	note_time(m, g);
	switch (result) {
	case MB_R_OK:
		m->answered = true;
		for (size_t i = rq->first; i < rq->first + rq->n; i++) {
			if (mb_decode(&g->e[i], x->data, x->dlen, rq->addr, &g->vals[i])) {
				g->quality[i] = "protocol";
			} else {
				g->quality[i] = NULL;
				if (g->e[i].refused) {
					/* The device's map changed: it answers again. */
					g->e[i].refused = false;
					g->replan = true;
				}
			}
		}
		break;
	case MB_R_EXCEPTION:
		m->answered = true;
		input_count_error(m->in, INPUT_ERR_EXCEPTION, "%s %u+%u: exception %d (%s)",
				  func_names[rq->func - 1], rq->addr, rq->count, x->exception,
				  exc_name(x->exception));
		if (x->exception == 2 && rq->n > 1) {
			/* Split and ask again at once: the good ones still read. */
			mb_split(g->e, rq);
			group_plan(g);
			send_req(m, g);
			return;
		}
		if (x->exception == 2 && !g->e[rq->first].refused) {
			/* Refused alone: remembered, and planned without it,
			 * so the next request now has this one's place. */
			mb_split(g->e, rq);
			g->quality[rq->first] = "exception 2";
			group_plan(g);
			if (g->with_refused)
				g->cur++;
			g->tries = 0;
			set_state(m);
			send_req(m, g);
			return;
		}
		snprintf(g->qbuf[rq->first], sizeof(g->qbuf[0]), "exception %d", x->exception);
		for (size_t i = rq->first; i < rq->first + rq->n; i++)
			g->quality[i] = g->qbuf[rq->first];
		break;
	case MB_R_TIMEOUT:
	case MB_R_CRC:
	case MB_R_PROTOCOL:
		m->last_fail = result;
		if (result == MB_R_TIMEOUT)
			input_count_error(m->in, INPUT_ERR_TIMEOUT, "%s %u+%u: no answer in %" PRId64 " ms",
					  func_names[rq->func - 1], rq->addr, rq->count, m->c->timeout_ms);
		else if (result == MB_R_CRC)
			input_count_error(m->in, INPUT_ERR_CRC, "%s %u+%u: damaged answer (%s)",
					  func_names[rq->func - 1], rq->addr, rq->count, mb_err_str(x->err));
		else
			input_count_error(m->in, INPUT_ERR_PROTOCOL, "%s %u+%u: answer makes no sense (%s)",
					  func_names[rq->func - 1], rq->addr, rq->count, mb_err_str(x->err));
		if (g->tries++ < m->c->retries) {
			send_req(m, g);
			return;
		}
		fail_req(g, rq, result == MB_R_TIMEOUT ? "timeout" : result == MB_R_CRC ? "crc" : "protocol");
		break;
	default:
		/* Cannot reach the device: the rest of this poll fails too. */
		m->last_fail = result;
		input_count_error(m->in, result == MB_R_CONNECT ? INPUT_ERR_CONNECT : INPUT_ERR_IO, "%s",
				  mb_bus_why(m->bus));
		for (size_t k = g->cur; k < g->n_reqs; k++)
			fail_req(g, &g->reqs[k], result == MB_R_CONNECT ? "connect" : "io");
		g->cur = g->n_reqs;
		end_poll(m, g);
		return;
	}
	g->cur++;
	g->tries = 0;
	send_req(m, g);
}

static void start_poll(struct modbus *m, struct mb_group *g)
{
	g->due = false;
	m->active = g;
	m->answered = false;
	m->last_fail = MB_R_OK;
	g->polls++;
	g->have_time = false;
	g->cur = 0;
	g->tries = 0;
	m->x.sent_ms = 0;
	for (size_t i = 0; i < g->n; i++)
		g->quality[i] = g->e[i].refused ? "exception 2" : NULL;
	if (!(g->polls % (uint64_t)m->c->refused_retry)) {
		for (size_t i = 0; i < g->n; i++)
			g->with_refused |= g->e[i].refused;
	}
	group_plan(g);
	if (!g->n_reqs) {
		input_sample_now(m->in, &g->t);
		g->have_time = true;
	}
	send_req(m, g);
}

static void poll_next(struct modbus *m)
{
	if (m->active || m->blocked)
		return;
	for (size_t i = 0; i < m->n_groups; i++) {
		if (m->groups[i].due) {
			start_poll(m, &m->groups[i]);
			return;
		}
	}
}

static int64_t group_tick(struct loop_timer *t)
{
	struct mb_group *g = container_of(t, struct mb_group, timer);
	struct modbus *m = g->m;

	if (t->missed > g->seen_missed) {
		/* Deadlines skipped while the loop was stalled. */
		input_count_missed(m->in, t->missed - g->seen_missed);
		g->seen_missed = t->missed;
	}
	if (m->quiet_until && loop_now_ms() < m->quiet_until)
		return 0;       /* backing off: this deadline is skipped */
	if (g->due || m->active == g) {
		/* The last poll is still running: this one is skipped. */
		input_count_missed(m->in, 1);
		return 0;
	}
	g->due = true;
	poll_next(m);
	return 0;
}

static void modbus_stop(struct input *in, void *state)
{
	struct modbus *m = state;

	if (!m)
		return;
	if (m->bus) {
		mb_bus_cancel(m->bus, &m->x);
		mb_bus_put(m->bus);
	}
	for (size_t i = 0; i < m->n_groups; i++) {
		struct mb_group *g = &m->groups[i];

		loop_timer_cancel(m->loop, &g->timer);
		xfree(g->e);
		xfree(g->reqs);
		xfree(g->vals);
		xfree(g->quality);
		xfree(g->qbuf);
	}
	xfree(m->groups);
	mb_link_conf_release(&m->link);
	xfree(m);
}

static int build_groups(struct modbus *m)
{
	const struct cfg_table *tab = &m->c->registers;

	m->groups = xcalloc(tab->n, sizeof(*m->groups));
	if (!m->groups)
		return -ENOMEM;
	for (size_t i = 0; i < tab->n; i++) {
		const struct mb_row *r = CFG_ROW(tab, struct mb_row, i);
		struct mb_group *g = NULL;
		struct mb_entry *e;
		bool ok;
		int type = row_type(r);

		for (size_t k = 0; k < m->n_groups; k++)
			if (same_group(m->groups[k].name, row_group(r)))
				g = &m->groups[k];
		if (!g) {
			g = &m->groups[m->n_groups++];
			g->m = m;
			g->name = row_group(r);
			g->interval_ms = m->c->interval_ms;
			g->timer.cb = group_tick;
			g->e = xcalloc(tab->n, sizeof(*g->e));
			g->reqs = xcalloc(tab->n, sizeof(*g->reqs));
			g->vals = xcalloc(tab->n, sizeof(*g->vals));
			g->quality = xcalloc(tab->n, sizeof(*g->quality));
			g->qbuf = xcalloc(tab->n, sizeof(*g->qbuf));
			if (!g->e || !g->reqs || !g->vals || !g->quality || !g->qbuf)
				return -ENOMEM;
		}
		if (r->interval_ms)
			g->interval_ms = r->interval_ms;
		e = &g->e[g->n++];
		e->name = r->name;
		e->unit = r->unit;
		e->func = r->function + 1;
		e->addr = (uint16_t)r->address;
		e->type = type;
		e->count = (uint16_t)(type == MB_T_STRING ? r->count : mb_type_regs(type));
		e->order = r->order;
		e->bit = (int)r->bit;
		e->scale = parse_num(r->scale ? r->scale : "1", &ok);
		e->offset = parse_num(r->offset ? r->offset : "0", &ok);
	}
	for (size_t k = 0; k < m->n_groups; k++) {
		mb_sort(m->groups[k].e, m->groups[k].n);
		group_plan(&m->groups[k]);
	}
	return 0;
}

static int modbus_start(struct input *in, void **state)
{
	struct modbus *m = xcalloc(1, sizeof(*m));
	char err[256];
	int rc;

	if (!m)
		return -ENOMEM;
	m->in = in;
	m->c = input_driver_conf(in);
	m->loop = input_loop(in);
	m->x.done = xact_done;
	rc = mb_url_parse(m->c->url, &m->link, err, sizeof(err));
	if (rc) {
		input_error(in, "cannot start: %s", err);
		goto out_stop;
	}
	m->link.baud = m->c->baud;
	m->link.parity = m->c->parity;
	m->link.data_bits = (int)m->c->data_bits;
	m->link.stop_bits = (int)m->c->stop_bits;
	rc = build_groups(m);
	if (rc) {
		input_error(in, "cannot start: %s", strerror(-rc));
		goto out_stop;
	}
	rc = mb_bus_get(m->loop, &m->link, &m->bus);
	if (rc) {
		input_error(in, rc == -EINVAL ? "cannot start: another input uses %s with other line settings"
				: "cannot start: %s", rc == -EINVAL ? m->c->url : strerror(-rc));
		goto out_stop;
	}
	input_set_connected(in, false, "not polled yet");
	for (size_t k = 0; k < m->n_groups; k++) {
		struct mb_group *g = &m->groups[k];

		loop_timer_every(m->loop, &g->timer, loop_next_multiple(loop_now_ms(), g->interval_ms),
				 g->interval_ms);
	}
	set_state(m);
	*state = m;
	return 0;

out_stop:
	modbus_stop(in, m);
	return rc;
}

static void modbus_resume(struct input *in, void *state)
{
	struct modbus *m = state;

	m->blocked = false;
	poll_next(m);
}

const struct driver modbus_driver = {
	.version = DRIVER_VERSION,
	.name = "modbus",
	.help = "Polls a Modbus device (TCP, RTU on a serial line, or RTU over TCP) for the values of its "
		"register map, one record per poll.",
	.flags = DRIVER_STRUCTURED | DRIVER_REPLAY,
	.conf_keys = modbus_keys,
	.conf_size = sizeof(struct modbus_conf),
	.validate = modbus_validate,
	.start = modbus_start,
	.resume = modbus_resume,
	.stop = modbus_stop,
};

