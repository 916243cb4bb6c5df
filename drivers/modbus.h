/* modbus.h - the Modbus driver's own parts, shared by its files:
 * modbus_proto.c (frames, values and request planning: pure functions),
 * modbus_link.c (TCP, RTU and RTU-over-TCP transports on the loop, one
 * transaction at a time per bus) and modbus.c (the driver). Nothing outside
 * drivers/modbus*.c and its unit test includes it.
 */
#ifndef DRIVERS_MODBUS_H
#define DRIVERS_MODBUS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "driver.h"

/* ---- protocol (modbus_proto.c) ------------------------------------------ */

enum mb_func {
	MB_FC_COILS = 1,
	MB_FC_DISCRETE = 2,
	MB_FC_HOLDING = 3,
	MB_FC_INPUT = 4,
};

/* The most one read request may ask for (the spec's limits). */
#define MB_MAX_REGS 125
#define MB_MAX_BITS 2000
#define MB_MAX_PDU 253
#define MB_MAX_ADU 260          /* MBAP (7) + PDU, or address + PDU + CRC */
#define MB_MBAP_LEN 7

enum mb_type {
	MB_T_BOOL, MB_T_INT16, MB_T_UINT16, MB_T_INT32, MB_T_UINT32, MB_T_INT64,
	MB_T_UINT64, MB_T_FLOAT32, MB_T_FLOAT64, MB_T_STRING, MB_T_BIT,
	MB_T_COUNT
};

/* Byte order of a value on the wire, A the most significant byte:
 * ABCD big-endian, DCBA little-endian, BADC bytes swapped in each register,
 * CDAB registers in reverse order (each big-endian). */
enum mb_order { MB_ABCD, MB_DCBA, MB_BADC, MB_CDAB };

/* Decoding errors, each of its own kind (negative), besides -EAGAIN (the
 * frame is not complete yet). */
enum mb_err {
	MB_E_SHORT = -1000,     /* a frame shorter than its header says */
	MB_E_CRC,               /* RTU checksum wrong */
	MB_E_PROTO_ID,          /* MBAP protocol id not 0 */
	MB_E_TID,               /* MBAP transaction id not the request's */
	MB_E_UNIT,              /* answer from another unit */
	MB_E_FUNC,              /* answer to another function */
	MB_E_LENGTH,            /* byte count or frame length wrong */
	MB_E_EXCEPTION,         /* an exception response (code in *exc) */
};

const char *mb_err_str(int err);
const char *mb_type_name(int type);
/* Registers (functions 3, 4) or bits (1, 2) a value of this type takes;
 * string: 0 (given by its count). */
unsigned mb_type_regs(int type);
bool mb_func_bits(int func);

uint16_t mb_crc16(const uint8_t *p, size_t n);
/* A read request PDU (5 bytes) into pdu. */
size_t mb_pdu_read(uint8_t *pdu, int func, uint16_t addr, uint16_t count);
/* Frame a PDU: MBAP header + PDU, or unit + PDU + CRC (low byte first).
 * out holds MB_MAX_ADU bytes. Returns the frame's length. */
size_t mb_frame_tcp(uint8_t *out, uint16_t tid, uint8_t unit, const uint8_t *pdu, size_t len);
size_t mb_frame_rtu(uint8_t *out, uint8_t unit, const uint8_t *pdu, size_t len);
/* How long the frame at the start of buf is: its length when known from
 * what is there (it may be longer than len: wait for more), -EAGAIN when
 * too little is there to know, MB_E_LENGTH when its header is impossible. */
int mb_tcp_frame_len(const uint8_t *buf, size_t len);
int mb_rtu_frame_len(const uint8_t *buf, size_t len);
/* Check a complete answer PDU to a read of `count` items with `func`:
 * 0 with *data and *dlen the values' bytes, MB_E_EXCEPTION with *exc, or
 * MB_E_FUNC / MB_E_LENGTH. */
int mb_pdu_check(const uint8_t *pdu, size_t len, int func, uint16_t count,
		 const uint8_t **data, size_t *dlen, int *exc);
/* Check a whole TCP (MBAP) or RTU answer frame, then its PDU as above. */
int mb_tcp_check(const uint8_t *frame, size_t len, uint16_t tid, uint8_t unit, int func,
		 uint16_t count, const uint8_t **data, size_t *dlen, int *exc);
int mb_rtu_check(const uint8_t *frame, size_t len, uint8_t unit, int func,
		 uint16_t count, const uint8_t **data, size_t *dlen, int *exc);

/* One value of the register map. */
struct mb_entry {
	const char *name;
	const char *unit;
	int func;               /* enum mb_func */
	uint16_t addr;          /* 0-based protocol address */
	uint16_t count;         /* registers (or bits) it takes */
	int type;               /* enum mb_type */
	int order;              /* enum mb_order */
	int bit;                /* MB_T_BIT: 0..15 */
	double scale, offset;
	/* Planning state. */
	bool refused;           /* the device answered exception 2 for it alone */
	bool no_merge_next;     /* a merged request up to the next entry was refused */
};

enum mb_vkind { MB_V_BOOL, MB_V_INT, MB_V_UINT, MB_V_NUM, MB_V_STR };
struct mb_value {
	int kind;               /* enum mb_vkind */
	bool b;
	int64_t i;
	uint64_t u;
	double d;
	size_t slen;
	char s[2 * MB_MAX_REGS + 1];
};

/* Decode entry e from the data of a read that started at `base`: dlen
 * bytes of register or bit data. Scale and offset make a number of it
 * (kept an integer when they are 1 and 0). 0 or MB_E_LENGTH when the
 * entry lies outside the data. */
int mb_decode(const struct mb_entry *e, const uint8_t *data, size_t dlen, uint16_t base,
	      struct mb_value *v);

/* One planned read request: entries [first, first + n) of the sorted map. */
struct mb_req {
	int func;
	uint16_t addr, count;
	size_t first, n;
};

/* Sort entries by function and address (stable on ties). */
void mb_sort(struct mb_entry *e, size_t n);
/* Plan the reads of sorted entries: those of the same function are merged
 * while the hole between them is at most max_gap items and the request
 * stays within MB_MAX_REGS registers (MB_MAX_BITS bits). A refused entry is
 * left out (with_refused: read alone) and never merged across; nor is an
 * entry marked no_merge_next with the next one. Returns the number of
 * requests written to reqs (which holds n). */
size_t mb_plan(const struct mb_entry *e, size_t n, unsigned max_gap, bool with_refused,
	       struct mb_req *reqs);
/* The device answered exception 2 (illegal data address) to r: split it.
 * A request of several entries is cut in half for the next plan (true);
 * a single entry is marked refused (false). */
bool mb_split(struct mb_entry *e, const struct mb_req *r);

/* ---- transports (modbus_link.c) ----------------------------------------- */

enum mb_proto { MB_TCP, MB_RTU, MB_RTU_TCP };
enum mb_parity { MB_PAR_NONE, MB_PAR_EVEN, MB_PAR_ODD };

struct mb_link_conf {
	int proto;              /* enum mb_proto */
	char *host;             /* TCP, RTU over TCP */
	char *port;
	char *path;             /* RTU serial device */
	int64_t baud;
	int parity;             /* enum mb_parity */
	int data_bits, stop_bits;
};

/* Parse "tcp://host[:port]", "rtu:///dev/ttyX", "rtu+tcp://host:port".
 * 0 or -EINVAL with err; strings xstrdup'ed (mb_link_conf_release()). */
int mb_url_parse(const char *url, struct mb_link_conf *c, char *err, size_t errlen);
void mb_link_conf_release(struct mb_link_conf *c);

/* Results of a transaction, besides 0 (an answer, checked). */
enum mb_result {
	MB_R_OK = 0,
	MB_R_TIMEOUT = 1,
	MB_R_CRC,
	MB_R_PROTOCOL,
	MB_R_EXCEPTION,
	MB_R_CONNECT,
	MB_R_IO,
};

struct mb_bus;
struct mb_xact;
typedef void mb_done_fn(struct mb_xact *x, int result);

/* One request in flight or waiting for its bus. Owned by the caller, who
 * keeps it alive until done() or mb_bus_cancel(). */
struct mb_xact {
	uint8_t unit;
	int func;
	uint16_t addr, count;
	int64_t timeout_ms;
	mb_done_fn *done;
	/* Filled for done(): */
	int exception;          /* MB_R_EXCEPTION: its code */
	int err;                /* MB_R_PROTOCOL/CRC: enum mb_err; IO/CONNECT: -errno */
	const uint8_t *data;    /* MB_R_OK: the values' bytes, valid in done() */
	size_t dlen;
	int64_t sent_ms;        /* monotonic, when the request went out */
	/* The bus's: */
	struct mb_bus *bus;
	struct mb_xact *next;
	bool queued;
};

/* The bus for this link: shared by every input on the same serial device
 * or RTU-over-TCP endpoint (one transaction at a time); a TCP device has
 * its own. 0 or -errno. */
int mb_bus_get(struct loop *l, const struct mb_link_conf *c, struct mb_bus **out);
void mb_bus_put(struct mb_bus *b);
/* Queue a transaction; done() is called from the loop (never inside this
 * call). */
void mb_bus_submit(struct mb_bus *b, struct mb_xact *x);
/* Forget a transaction (its owner stops); done() is not called. */
void mb_bus_cancel(struct mb_bus *b, struct mb_xact *x);
/* "connected", or why not (for status). */
bool mb_bus_connected(const struct mb_bus *b);
const char *mb_bus_why(const struct mb_bus *b);

#endif
