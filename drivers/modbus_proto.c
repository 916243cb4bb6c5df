/* modbus_proto.c - Modbus frames, values and request planning, as pure
 * functions (no I/O, no clock) so that each is tested against the spec's
 * examples: MBAP (TCP) and RTU framing with CRC-16/MODBUS, strict checks of
 * answers (each kind of wrong answer its own error), the decoding of values
 * in the four byte orders, and the merging of register map entries into
 * few requests, split again where a device refuses an address.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "modbus.h"

static const char *const type_names[MB_T_COUNT] = {
	"bool", "int16", "uint16", "int32", "uint32", "int64", "uint64",
	"float32", "float64", "string", "bit",
};

const char *mb_type_name(int type)
{
	return type >= 0 && type < MB_T_COUNT ? type_names[type] : "?";
}

const char *mb_err_str(int err)
{
	switch (err) {
	case MB_E_SHORT: return "short frame";
	case MB_E_CRC: return "bad CRC";
	case MB_E_PROTO_ID: return "MBAP protocol id not 0";
	case MB_E_TID: return "wrong transaction id";
	case MB_E_UNIT: return "answer from another unit id";
	case MB_E_FUNC: return "answer to another function";
	case MB_E_LENGTH: return "wrong length";
	case MB_E_EXCEPTION: return "exception";
	case -EAGAIN: return "incomplete frame";
	default: return "error";
	}
}

unsigned mb_type_regs(int type)
{
	switch (type) {
	case MB_T_BOOL: case MB_T_INT16: case MB_T_UINT16: case MB_T_BIT: return 1;
	case MB_T_INT32: case MB_T_UINT32: case MB_T_FLOAT32: return 2;
	case MB_T_INT64: case MB_T_UINT64: case MB_T_FLOAT64: return 4;
	default: return 0;
	}
}

bool mb_func_bits(int func)
{
	return func == MB_FC_COILS || func == MB_FC_DISCRETE;
}

uint16_t mb_crc16(const uint8_t *p, size_t n)
{
	uint16_t crc = 0xffff;

	for (size_t i = 0; i < n; i++) {
		crc ^= p[i];
		for (int b = 0; b < 8; b++)
			crc = crc & 1 ? (uint16_t)((crc >> 1) ^ 0xa001) : (uint16_t)(crc >> 1);
	}
	return crc;
}

size_t mb_pdu_read(uint8_t *pdu, int func, uint16_t addr, uint16_t count)
{
	pdu[0] = (uint8_t)func;
	pdu[1] = (uint8_t)(addr >> 8);
	pdu[2] = (uint8_t)addr;
	pdu[3] = (uint8_t)(count >> 8);
	pdu[4] = (uint8_t)count;
	return 5;
}

size_t mb_frame_tcp(uint8_t *out, uint16_t tid, uint8_t unit, const uint8_t *pdu, size_t len)
{
	out[0] = (uint8_t)(tid >> 8);
	out[1] = (uint8_t)tid;
	out[2] = 0;
	out[3] = 0;
	out[4] = (uint8_t)((len + 1) >> 8);
	out[5] = (uint8_t)(len + 1);
	out[6] = unit;
	memcpy(out + MB_MBAP_LEN, pdu, len);
	return MB_MBAP_LEN + len;
}

size_t mb_frame_rtu(uint8_t *out, uint8_t unit, const uint8_t *pdu, size_t len)
{
	uint16_t crc;

	out[0] = unit;
	memcpy(out + 1, pdu, len);
	crc = mb_crc16(out, len + 1);
	out[len + 1] = (uint8_t)crc;
	out[len + 2] = (uint8_t)(crc >> 8);
	return len + 3;
}

int mb_tcp_frame_len(const uint8_t *buf, size_t len)
{
	unsigned l;

	if (len < 6)
		return -EAGAIN;
	l = (unsigned)buf[4] << 8 | buf[5];
	/* At least unit + function; at most unit + the largest PDU. */
	if (l < 2 || l > MB_MAX_PDU + 1)
		return MB_E_LENGTH;
	return (int)(6 + l);
}

int mb_rtu_frame_len(const uint8_t *buf, size_t len)
{
	if (len < 2)
		return -EAGAIN;
	if (buf[1] & 0x80)
		return 5;       /* unit, function | 0x80, code, CRC */
	if (buf[1] < MB_FC_COILS || buf[1] > MB_FC_INPUT)
		return MB_E_FUNC;
	if (len < 3)
		return -EAGAIN;
	return 3 + buf[2] + 2;
}

int mb_pdu_check(const uint8_t *pdu, size_t len, int func, uint16_t count,
		 const uint8_t **data, size_t *dlen, int *exc)
{
	size_t want;

	if (len < 2)
		return MB_E_SHORT;
	if (pdu[0] == (func | 0x80)) {
		if (len != 2)
			return MB_E_LENGTH;
		*exc = pdu[1];
		return MB_E_EXCEPTION;
	}
	if (pdu[0] != func)
		return MB_E_FUNC;
	want = mb_func_bits(func) ? (count + 7u) / 8u : 2u * count;
	if (pdu[1] != want)
		return MB_E_LENGTH;
	if (len < 2 + want)
		return MB_E_SHORT;
	if (len > 2 + want)
		return MB_E_LENGTH;
	*data = pdu + 2;
	*dlen = want;
	return 0;
}

int mb_tcp_check(const uint8_t *frame, size_t len, uint16_t tid, uint8_t unit, int func,
		 uint16_t count, const uint8_t **data, size_t *dlen, int *exc)
{
	int flen;

	if (len < MB_MBAP_LEN + 1)
		return MB_E_SHORT;
	flen = mb_tcp_frame_len(frame, len);
	if (flen < 0)
		return flen;
	if ((size_t)flen > len)
		return MB_E_SHORT;
	if ((size_t)flen < len)
		return MB_E_LENGTH;
	if (frame[2] || frame[3])
		return MB_E_PROTO_ID;
	if (((unsigned)frame[0] << 8 | frame[1]) != tid)
		return MB_E_TID;
	if (frame[6] != unit)
		return MB_E_UNIT;
	return mb_pdu_check(frame + MB_MBAP_LEN, len - MB_MBAP_LEN, func, count, data, dlen, exc);
}

int mb_rtu_check(const uint8_t *frame, size_t len, uint8_t unit, int func,
		 uint16_t count, const uint8_t **data, size_t *dlen, int *exc)
{
	uint16_t crc;

	if (len < 5)
		return MB_E_SHORT;
	crc = mb_crc16(frame, len - 2);
	if (frame[len - 2] != (uint8_t)crc || frame[len - 1] != (uint8_t)(crc >> 8))
		return MB_E_CRC;
	if (frame[0] != unit)
		return MB_E_UNIT;
	return mb_pdu_check(frame + 1, len - 3, func, count, data, dlen, exc);
}

/* The value's bytes, most significant first, from n wire bytes in order o. */
static void reorder(const uint8_t *w, size_t n, int o, uint8_t *out)
{
	for (size_t i = 0; i < n; i++) {
		size_t j;

		switch (o) {
		case MB_DCBA: j = n - 1 - i; break;
		case MB_BADC: j = i ^ 1; break;
		case MB_CDAB: j = (n - 2 - (i & ~(size_t)1)) | (i & 1); break;
		default: j = i; break;
		}
		out[i] = w[j];
	}
}

static uint64_t be_uint(const uint8_t *b, size_t n)
{
	uint64_t v = 0;

	for (size_t i = 0; i < n; i++)
		v = v << 8 | b[i];
	return v;
}

static void scaled(const struct mb_entry *e, struct mb_value *v, double x)
{
	v->kind = MB_V_NUM;
	v->d = x * e->scale + e->offset;
}

int mb_decode(const struct mb_entry *e, const uint8_t *data, size_t dlen, uint16_t base,
	      struct mb_value *v)
{
	bool plain = e->scale == 1.0 && e->offset == 0.0;
	uint8_t b[8];
	size_t off, n;
	uint64_t u;

	memset(v, 0, offsetof(struct mb_value, s));
	v->s[0] = '\0';
	if (e->addr < base)
		return MB_E_LENGTH;
	off = (size_t)(e->addr - base);
	if (mb_func_bits(e->func)) {
		if (off / 8 >= dlen)
			return MB_E_LENGTH;
		v->kind = MB_V_BOOL;
		v->b = data[off / 8] >> (off % 8) & 1;
		return 0;
	}
	n = e->type == MB_T_STRING ? 2u * e->count : 2u * mb_type_regs(e->type);
	off *= 2;
	if (off + n > dlen)
		return MB_E_LENGTH;
	if (e->type == MB_T_STRING) {
		size_t k = 0;

		for (size_t i = 0; i < n; i++) {
			/* Byte-swapped orders swap the characters of each register. */
			uint8_t c = data[off + ((e->order == MB_BADC || e->order == MB_DCBA) ? i ^ 1 : i)];

			if (!c)
				break;
			v->s[k++] = (char)c;
		}
		while (k && v->s[k - 1] == ' ')
			k--;
		v->s[k] = '\0';
		v->slen = k;
		v->kind = MB_V_STR;
		return 0;
	}
	/* 16-bit values have one register: the orders only swap its bytes. */
	reorder(data + off, n, n == 2 && e->order == MB_CDAB ? MB_ABCD :
		n == 2 && e->order == MB_DCBA ? MB_BADC : e->order, b);
	u = be_uint(b, n);
	switch (e->type) {
	case MB_T_BOOL:
		v->kind = MB_V_BOOL;
		v->b = u != 0;
		return 0;
	case MB_T_BIT:
		v->kind = MB_V_BOOL;
		v->b = u >> e->bit & 1;
		return 0;
	case MB_T_INT16: case MB_T_INT32: case MB_T_INT64: {
		int64_t i;

		if (n == 2)
			i = (int16_t)u;
		else if (n == 4)
			i = (int32_t)u;
		else
			i = (int64_t)u;
		if (plain) {
			v->kind = MB_V_INT;
			v->i = i;
		} else {
			scaled(e, v, (double)i);
		}
		return 0;
	}
	case MB_T_UINT16: case MB_T_UINT32: case MB_T_UINT64:
		if (plain) {
			v->kind = MB_V_UINT;
			v->u = u;
		} else {
			scaled(e, v, (double)u);
		}
		return 0;
	case MB_T_FLOAT32: {
		uint32_t w = (uint32_t)u;
		float f;

		memcpy(&f, &w, sizeof(f));
		scaled(e, v, f);
		return 0;
	}
	case MB_T_FLOAT64: {
		double d;

		memcpy(&d, &u, sizeof(d));
		scaled(e, v, d);
		return 0;
	}
	default:
		return MB_E_LENGTH;
	}
}

static int entry_cmp(const struct mb_entry *a, const struct mb_entry *b)
{
	if (a->func != b->func)
		return a->func < b->func ? -1 : 1;
	if (a->addr != b->addr)
		return a->addr < b->addr ? -1 : 1;
	return 0;
}

void mb_sort(struct mb_entry *e, size_t n)
{
	/* Insertion sort: stable, and register maps are short. */
	for (size_t i = 1; i < n; i++) {
		struct mb_entry t = e[i];
		size_t j = i;

		while (j > 0 && entry_cmp(&e[j - 1], &t) > 0) {
			e[j] = e[j - 1];
			j--;
		}
		e[j] = t;
	}
}

static unsigned entry_end(const struct mb_entry *e)
{
	return (unsigned)e->addr + e->count;
}

size_t mb_plan(const struct mb_entry *e, size_t n, unsigned max_gap, bool with_refused,
	       struct mb_req *reqs)
{
	size_t nr = 0;
	struct mb_req *cur = NULL;
	unsigned cur_end = 0;

	for (size_t i = 0; i < n; i++) {
		unsigned limit = mb_func_bits(e[i].func) ? MB_MAX_BITS : MB_MAX_REGS;
		unsigned end = entry_end(&e[i]);

		if (e[i].refused) {
			cur = NULL;     /* never merged across */
			if (!with_refused)
				continue;
			reqs[nr++] = (struct mb_req){ e[i].func, e[i].addr, e[i].count, i, 1 };
			continue;
		}
		if (cur && cur->func == e[i].func && !e[i - 1].no_merge_next &&
		    (e[i].addr <= cur_end || e[i].addr - cur_end <= max_gap) &&
		    (end > cur_end ? end : cur_end) - cur->addr <= limit) {
			if (end > cur_end)
				cur_end = end;
			cur->count = (uint16_t)(cur_end - cur->addr);
			cur->n++;
			continue;
		}
		cur = &reqs[nr++];
		*cur = (struct mb_req){ e[i].func, e[i].addr, e[i].count, i, 1 };
		cur_end = end;
	}
	return nr;
}

bool mb_split(struct mb_entry *e, const struct mb_req *r)
{
	if (r->n == 1) {
		e[r->first].refused = true;
		return false;
	}
	e[r->first + r->n / 2 - 1].no_merge_next = true;
	return true;
}
