/* test_modbus_proto.c - Modbus frames against the published examples (the
 * application protocol spec's PDUs, the serial line spec's CRC, MBAP), the
 * strict checks of answers, values in every type and byte order, and the
 * planning of requests: merged within the gap and the size limit, split
 * where a device answers exception 2. */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "../../drivers/modbus.h"
#include "test.h"

#define U8(...) ((const uint8_t[]){ __VA_ARGS__ })

TEST(test_crc16_published)
{
	/* The frame of the serial line guide: 01 03 00 00 00 0A, CRC C5 CD on
	 * the wire (low byte first). And CRC-16/MODBUS's check value. */
	CHECK_EQ_INT(mb_crc16(U8(0x01, 0x03, 0x00, 0x00, 0x00, 0x0a), 6), 0xcdc5);
	CHECK_EQ_INT(mb_crc16((const uint8_t *)"123456789", 9), 0x4b37);
}

TEST(test_read_requests_of_the_spec)
{
	uint8_t pdu[5];

	/* Read holding registers 108-110: 03 00 6B 00 03. */
	CHECK_EQ_INT(mb_pdu_read(pdu, MB_FC_HOLDING, 0x6b, 3), 5);
	CHECK(!memcmp(pdu, U8(0x03, 0x00, 0x6b, 0x00, 0x03), 5));
	/* Read coils 20-38: 01 00 13 00 13; discrete inputs 197-218: 02 00 C4 00 16;
	 * input register 9: 04 00 08 00 01. */
	mb_pdu_read(pdu, MB_FC_COILS, 0x13, 0x13);
	CHECK(!memcmp(pdu, U8(0x01, 0x00, 0x13, 0x00, 0x13), 5));
	mb_pdu_read(pdu, MB_FC_DISCRETE, 0xc4, 0x16);
	CHECK(!memcmp(pdu, U8(0x02, 0x00, 0xc4, 0x00, 0x16), 5));
	mb_pdu_read(pdu, MB_FC_INPUT, 0x08, 0x01);
	CHECK(!memcmp(pdu, U8(0x04, 0x00, 0x08, 0x00, 0x01), 5));
}

TEST(test_frames)
{
	uint8_t pdu[5], f[MB_MAX_ADU];

	mb_pdu_read(pdu, MB_FC_HOLDING, 0x6b, 3);
	CHECK_EQ_INT(mb_frame_tcp(f, 0x0001, 0x11, pdu, 5), 12);
	CHECK(!memcmp(f, U8(0x00, 0x01, 0x00, 0x00, 0x00, 0x06, 0x11, 0x03, 0x00, 0x6b, 0x00, 0x03), 12));
	mb_pdu_read(pdu, MB_FC_HOLDING, 0, 10);
	CHECK_EQ_INT(mb_frame_rtu(f, 1, pdu, 5), 8);
	CHECK(!memcmp(f, U8(0x01, 0x03, 0x00, 0x00, 0x00, 0x0a, 0xc5, 0xcd), 8));
}

TEST(test_answers_of_the_spec)
{
	const uint8_t *d = NULL;
	size_t n = 0;
	int exc = 0;

	/* Holding registers 108-110 = 555, 0, 100. The answers are named:
	 * data points into them after the check. */
	static const uint8_t hold[] = { 0x03, 0x06, 0x02, 0x2b, 0x00, 0x00, 0x00, 0x64 };
	static const uint8_t coils[] = { 0x01, 0x03, 0xcd, 0x6b, 0x05 };
	static const uint8_t dis[] = { 0x02, 0x03, 0xac, 0xdb, 0x35 };
	static const uint8_t inr[] = { 0x04, 0x02, 0x00, 0x0a };
	int rc;

	rc = mb_pdu_check(hold, sizeof(hold), MB_FC_HOLDING, 3, &d, &n, &exc);
	CHECK_EQ_INT(rc, 0);
	CHECK_EQ_INT(n, 6);
	CHECK(d == hold + 2 && d[0] == 0x02 && d[1] == 0x2b && d[5] == 0x64);
	/* Coils 20-38: CD 6B 05; discrete inputs: AC DB 35; input register 9 = 10. */
	rc = mb_pdu_check(coils, sizeof(coils), MB_FC_COILS, 0x13, &d, &n, &exc);
	CHECK_EQ_INT(rc, 0);
	CHECK_EQ_INT(n, 3);
	rc = mb_pdu_check(dis, sizeof(dis), MB_FC_DISCRETE, 0x16, &d, &n, &exc);
	CHECK_EQ_INT(rc, 0);
	rc = mb_pdu_check(inr, sizeof(inr), MB_FC_INPUT, 1, &d, &n, &exc);
	CHECK_EQ_INT(rc, 0);
	CHECK(d == inr + 2 && d[1] == 0x0a);
	/* Exception: function 01, code 02 (illegal data address): 81 02. */
	CHECK_EQ_INT(mb_pdu_check(U8(0x81, 0x02), 2, MB_FC_COILS, 1, &d, &n, &exc), MB_E_EXCEPTION);
	CHECK_EQ_INT(exc, 2);
}

TEST(test_strict_answers)
{
	const uint8_t *d;
	size_t n;
	int exc;
	uint8_t f[MB_MAX_ADU], pdu[8] = { 0x03, 0x02, 0x00, 0x07 };
	size_t len;

	/* Another function, a byte count not the request's, a short or long PDU. */
	CHECK_EQ_INT(mb_pdu_check(U8(0x04, 0x02, 0x00, 0x07), 4, MB_FC_HOLDING, 1, &d, &n, &exc),
		     MB_E_FUNC);
	CHECK_EQ_INT(mb_pdu_check(U8(0x03, 0x04, 0x00, 0x07, 0, 0), 6, MB_FC_HOLDING, 1, &d, &n, &exc),
		     MB_E_LENGTH);
	CHECK_EQ_INT(mb_pdu_check(U8(0x03, 0x02, 0x00), 3, MB_FC_HOLDING, 1, &d, &n, &exc), MB_E_SHORT);
	CHECK_EQ_INT(mb_pdu_check(U8(0x03, 0x02, 0x00, 0x07, 0x00), 5, MB_FC_HOLDING, 1, &d, &n, &exc),
		     MB_E_LENGTH);
	CHECK_EQ_INT(mb_pdu_check(U8(0x03), 1, MB_FC_HOLDING, 1, &d, &n, &exc), MB_E_SHORT);

	/* MBAP: the right answer, then each header field wrong. */
	len = mb_frame_tcp(f, 7, 1, pdu, 4);
	CHECK_EQ_INT(mb_tcp_check(f, len, 7, 1, MB_FC_HOLDING, 1, &d, &n, &exc), 0);
	CHECK_EQ_INT(mb_tcp_check(f, len, 8, 1, MB_FC_HOLDING, 1, &d, &n, &exc), MB_E_TID);
	CHECK_EQ_INT(mb_tcp_check(f, len, 7, 2, MB_FC_HOLDING, 1, &d, &n, &exc), MB_E_UNIT);
	CHECK_EQ_INT(mb_tcp_check(f, len - 1, 7, 1, MB_FC_HOLDING, 1, &d, &n, &exc), MB_E_SHORT);
	f[3] = 1;
	CHECK_EQ_INT(mb_tcp_check(f, len, 7, 1, MB_FC_HOLDING, 1, &d, &n, &exc), MB_E_PROTO_ID);
	f[3] = 0;
	f[5] = 0;       /* length 0 */
	CHECK_EQ_INT(mb_tcp_check(f, len, 7, 1, MB_FC_HOLDING, 1, &d, &n, &exc), MB_E_LENGTH);
	CHECK_EQ_INT(mb_tcp_frame_len(f, 5), -EAGAIN);
	f[4] = 0xff;    /* beyond any PDU */
	CHECK_EQ_INT(mb_tcp_frame_len(f, 6), MB_E_LENGTH);

	/* RTU: right, bad CRC, another unit, garbage function. */
	len = mb_frame_rtu(f, 5, pdu, 4);
	CHECK_EQ_INT(mb_rtu_frame_len(f, 3), (int)len);
	CHECK_EQ_INT(mb_rtu_check(f, len, 5, MB_FC_HOLDING, 1, &d, &n, &exc), 0);
	CHECK_EQ_INT(mb_rtu_check(f, len, 6, MB_FC_HOLDING, 1, &d, &n, &exc), MB_E_UNIT);
	f[len - 1] ^= 0x40;
	CHECK_EQ_INT(mb_rtu_check(f, len, 5, MB_FC_HOLDING, 1, &d, &n, &exc), MB_E_CRC);
	CHECK_EQ_INT(mb_rtu_check(f, 3, 5, MB_FC_HOLDING, 1, &d, &n, &exc), MB_E_SHORT);
	CHECK_EQ_INT(mb_rtu_frame_len(U8(0x05, 0x83), 2), 5);
	CHECK_EQ_INT(mb_rtu_frame_len(U8(0x05, 0x03), 2), -EAGAIN);
	CHECK_EQ_INT(mb_rtu_frame_len(U8(0x05, 0x42, 0x00), 3), MB_E_FUNC);
	/* An RTU exception with a good CRC. */
	len = mb_frame_rtu(f, 5, U8(0x83, 0x02), 2);
	CHECK_EQ_INT(mb_rtu_check(f, len, 5, MB_FC_HOLDING, 1, &d, &n, &exc), MB_E_EXCEPTION);
	CHECK_EQ_INT(exc, 2);
}

static struct mb_entry ent(int func, uint16_t addr, int type, int order)
{
	struct mb_entry e = { .name = "x", .func = func, .addr = addr, .type = type,
			      .order = order, .scale = 1, .count = (uint16_t)mb_type_regs(type) };
	return e;
}

TEST(test_values_in_every_order)
{
	/* 0x12345678 as ABCD, DCBA, BADC, CDAB on the wire. */
	static const uint8_t w[4][4] = {
		{ 0x12, 0x34, 0x56, 0x78 }, { 0x78, 0x56, 0x34, 0x12 },
		{ 0x34, 0x12, 0x78, 0x56 }, { 0x56, 0x78, 0x12, 0x34 },
	};
	struct mb_value v;
	struct mb_entry e;

	for (int o = MB_ABCD; o <= MB_CDAB; o++) {
		e = ent(MB_FC_HOLDING, 10, MB_T_UINT32, o);
		CHECK_EQ_INT(mb_decode(&e, w[o], 4, 10, &v), 0);
		CHECK_EQ_INT(v.kind, MB_V_UINT);
		CHECK_EQ_INT(v.u, 0x12345678);
	}
	/* 64-bit: 0x0102030405060708. */
	{
		static const uint8_t w8[4][8] = {
			{ 1, 2, 3, 4, 5, 6, 7, 8 }, { 8, 7, 6, 5, 4, 3, 2, 1 },
			{ 2, 1, 4, 3, 6, 5, 8, 7 }, { 7, 8, 5, 6, 3, 4, 1, 2 },
		};
		for (int o = MB_ABCD; o <= MB_CDAB; o++) {
			e = ent(MB_FC_HOLDING, 0, MB_T_UINT64, o);
			CHECK_EQ_INT(mb_decode(&e, w8[o], 8, 0, &v), 0);
			CHECK(v.u == 0x0102030405060708ull);
		}
	}
	/* float32 230.5 = 0x43668000 (ABCD), CDAB = 80 00 43 66. */
	e = ent(MB_FC_INPUT, 0, MB_T_FLOAT32, MB_ABCD);
	CHECK_EQ_INT(mb_decode(&e, U8(0x43, 0x66, 0x80, 0x00), 4, 0, &v), 0);
	CHECK_EQ_INT(v.kind, MB_V_NUM);
	CHECK(v.d == 230.5);
	e.order = MB_CDAB;
	CHECK_EQ_INT(mb_decode(&e, U8(0x80, 0x00, 0x43, 0x66), 4, 0, &v), 0);
	CHECK(v.d == 230.5);
	/* float64 -1.5 = BFF8000000000000. */
	e = ent(MB_FC_INPUT, 0, MB_T_FLOAT64, MB_DCBA);
	CHECK_EQ_INT(mb_decode(&e, U8(0, 0, 0, 0, 0, 0, 0xf8, 0xbf), 8, 0, &v), 0);
	CHECK(v.d == -1.5);
	/* int16 and int32 signs; a 16-bit value's DCBA/BADC swap its bytes. */
	e = ent(MB_FC_HOLDING, 1, MB_T_INT16, MB_ABCD);
	CHECK_EQ_INT(mb_decode(&e, U8(0, 0, 0xff, 0xfe), 4, 0, &v), 0);
	CHECK_EQ_INT(v.kind, MB_V_INT);
	CHECK_EQ_INT(v.i, -2);
	e.order = MB_DCBA;
	CHECK_EQ_INT(mb_decode(&e, U8(0, 0, 0xfe, 0xff), 4, 0, &v), 0);
	CHECK_EQ_INT(v.i, -2);
	e.order = MB_CDAB;
	CHECK_EQ_INT(mb_decode(&e, U8(0, 0, 0xff, 0xfe), 4, 0, &v), 0);
	CHECK_EQ_INT(v.i, -2);
	e = ent(MB_FC_HOLDING, 0, MB_T_INT32, MB_CDAB);
	CHECK_EQ_INT(mb_decode(&e, U8(0xff, 0xfe, 0xff, 0xff), 4, 0, &v), 0);
	CHECK_EQ_INT(v.i, -2);
	e = ent(MB_FC_HOLDING, 0, MB_T_INT64, MB_ABCD);
	CHECK_EQ_INT(mb_decode(&e, U8(0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfd), 8, 0, &v), 0);
	CHECK_EQ_INT(v.i, -3);
	e = ent(MB_FC_HOLDING, 0, MB_T_UINT16, MB_ABCD);
	CHECK_EQ_INT(mb_decode(&e, U8(0xff, 0xfe), 2, 0, &v), 0);
	CHECK_EQ_INT(v.u, 65534);
}

TEST(test_scale_bits_strings)
{
	struct mb_value v;
	struct mb_entry e = ent(MB_FC_HOLDING, 0, MB_T_INT16, MB_ABCD);

	/* value * scale + offset: 2305 * 0.1 - 40. */
	e.scale = 0.1;
	e.offset = -40;
	CHECK_EQ_INT(mb_decode(&e, U8(0x09, 0x01), 2, 0, &v), 0);
	CHECK_EQ_INT(v.kind, MB_V_NUM);
	CHECK(fabs(v.d - 190.5) < 1e-9);
	/* A bit within a register. */
	e = ent(MB_FC_HOLDING, 0, MB_T_BIT, MB_ABCD);
	e.bit = 9;
	CHECK_EQ_INT(mb_decode(&e, U8(0x02, 0x00), 2, 0, &v), 0);
	CHECK(v.kind == MB_V_BOOL && v.b);
	e.bit = 8;
	CHECK_EQ_INT(mb_decode(&e, U8(0x02, 0x00), 2, 0, &v), 0);
	CHECK(!v.b);
	/* Coils 20-38 of the spec: CD 6B 05; coil 20 = 1, 21 = 0, 27 = 1, 28 = 1, 36 = 1. */
	e = ent(MB_FC_COILS, 19, MB_T_BOOL, MB_ABCD);
	CHECK_EQ_INT(mb_decode(&e, U8(0xcd, 0x6b, 0x05), 3, 19, &v), 0);
	CHECK(v.b);
	e.addr = 20;
	mb_decode(&e, U8(0xcd, 0x6b, 0x05), 3, 19, &v);
	CHECK(!v.b);
	e.addr = 19 + 8;
	mb_decode(&e, U8(0xcd, 0x6b, 0x05), 3, 19, &v);
	CHECK(v.b);
	e.addr = 19 + 16;
	mb_decode(&e, U8(0xcd, 0x6b, 0x05), 3, 19, &v);
	CHECK(v.b);
	e.addr = 19 + 24;
	CHECK_EQ_INT(mb_decode(&e, U8(0xcd, 0x6b, 0x05), 3, 19, &v), MB_E_LENGTH);
	/* Strings: characters in order, NUL and trailing blanks cut; BADC swaps. */
	e = ent(MB_FC_HOLDING, 0, MB_T_STRING, MB_ABCD);
	e.count = 3;
	CHECK_EQ_INT(mb_decode(&e, U8('S', 'D', 'M', '6', ' ', ' '), 6, 0, &v), 0);
	CHECK(v.kind == MB_V_STR);
	CHECK_EQ_STR(v.s, "SDM6");
	e.order = MB_BADC;
	CHECK_EQ_INT(mb_decode(&e, U8('D', 'S', '6', 'M', ' ', 0), 6, 0, &v), 0);
	CHECK_EQ_STR(v.s, "SDM6");
	/* Outside the data read. */
	e = ent(MB_FC_HOLDING, 4, MB_T_UINT32, MB_ABCD);
	CHECK_EQ_INT(mb_decode(&e, U8(0, 0, 0, 0, 0, 0, 0, 0, 0, 0), 10, 0, &v), MB_E_LENGTH);
	CHECK_EQ_INT(mb_decode(&e, U8(0, 0), 2, 5, &v), MB_E_LENGTH);
}

TEST(test_plan_merges_within_gap_and_limit)
{
	struct mb_entry e[8];
	struct mb_req r[8];
	size_t n;

	/* Input registers 0 (float32), 6 (float32), 20 (uint16); holding 0. */
	e[0] = ent(MB_FC_INPUT, 6, MB_T_FLOAT32, MB_ABCD);
	e[1] = ent(MB_FC_HOLDING, 0, MB_T_UINT16, MB_ABCD);
	e[2] = ent(MB_FC_INPUT, 0, MB_T_FLOAT32, MB_ABCD);
	e[3] = ent(MB_FC_INPUT, 20, MB_T_UINT16, MB_ABCD);
	mb_sort(e, 4);
	CHECK(e[0].func == MB_FC_HOLDING && e[1].addr == 0 && e[2].addr == 6);
	/* Gap 4 merges 0-1 and 6-7 (hole of 4), not 20 (hole of 12). */
	n = mb_plan(e, 4, 4, false, r);
	REQUIRE(n == 3);
	CHECK(r[0].func == MB_FC_HOLDING && r[0].addr == 0 && r[0].count == 1 && r[0].n == 1);
	CHECK(r[1].func == MB_FC_INPUT && r[1].addr == 0 && r[1].count == 8 && r[1].n == 2);
	CHECK(r[2].addr == 20 && r[2].count == 1 && r[2].first == 3);
	/* Gap 3 does not merge them; gap 12 merges all three input reads. */
	CHECK_EQ_INT(mb_plan(e, 4, 3, false, r), 4);
	n = mb_plan(e, 4, 12, false, r);
	CHECK_EQ_INT(n, 2);
	CHECK(r[1].addr == 0 && r[1].count == 21 && r[1].n == 3);

	/* The 125-register limit: 0-3 and 121-124 fit (125), 122-125 does not. */
	e[0] = ent(MB_FC_HOLDING, 0, MB_T_UINT64, MB_ABCD);
	e[1] = ent(MB_FC_HOLDING, 121, MB_T_UINT64, MB_ABCD);
	CHECK_EQ_INT(mb_plan(e, 2, 200, false, r), 1);
	CHECK_EQ_INT(r[0].count, 125);
	e[1].addr = 122;
	CHECK_EQ_INT(mb_plan(e, 2, 200, false, r), 2);
	/* Coils merge up to 2000 bits. */
	e[0] = ent(MB_FC_COILS, 0, MB_T_BOOL, MB_ABCD);
	e[1] = ent(MB_FC_COILS, 1999, MB_T_BOOL, MB_ABCD);
	CHECK_EQ_INT(mb_plan(e, 2, 5000, false, r), 1);
	e[1].addr = 2000;
	CHECK_EQ_INT(mb_plan(e, 2, 5000, false, r), 2);
	/* Overlapping entries (two bits of one register) share a request. */
	e[0] = ent(MB_FC_HOLDING, 5, MB_T_BIT, MB_ABCD);
	e[1] = ent(MB_FC_HOLDING, 5, MB_T_BIT, MB_ABCD);
	CHECK_EQ_INT(mb_plan(e, 2, 0, false, r), 1);
	CHECK_EQ_INT(r[0].count, 1);
}

TEST(test_plan_splits_on_exception_2)
{
	struct mb_entry e[4];
	struct mb_req r[4];
	size_t n;

	for (int i = 0; i < 4; i++)
		e[i] = ent(MB_FC_HOLDING, (uint16_t)(i * 2), MB_T_UINT16, MB_ABCD);
	n = mb_plan(e, 4, 10, false, r);
	REQUIRE(n == 1);
	/* The merged request is refused: halved. */
	CHECK(mb_split(e, &r[0]));
	n = mb_plan(e, 4, 10, false, r);
	REQUIRE(n == 2);
	CHECK(r[0].first == 0 && r[0].n == 2 && r[1].first == 2 && r[1].n == 2);
	/* The second half is refused: halved again, then entry 3 alone is
	 * refused and left out; the others still read. */
	CHECK(mb_split(e, &r[1]));
	n = mb_plan(e, 4, 10, false, r);
	REQUIRE(n == 3);
	CHECK(r[2].first == 3 && r[2].n == 1);
	CHECK(!mb_split(e, &r[2]));
	CHECK(e[3].refused);
	n = mb_plan(e, 4, 10, false, r);
	CHECK_EQ_INT(n, 2);
	CHECK(r[0].n == 2 && r[1].first == 2 && r[1].n == 1);
	/* Now and then the refused entry is tried again, alone. */
	n = mb_plan(e, 4, 10, true, r);
	CHECK_EQ_INT(n, 3);
	CHECK(r[2].first == 3 && r[2].n == 1 && r[2].addr == 6);
	/* A refused entry is never merged across. */
	e[3].refused = false;
	e[1].refused = true;
	e[0].no_merge_next = e[1].no_merge_next = e[2].no_merge_next = false;
	n = mb_plan(e, 4, 10, false, r);
	CHECK_EQ_INT(n, 2);
	CHECK(r[0].n == 1 && r[1].first == 2 && r[1].n == 2);
}

int main(void)
{
	RUN(test_crc16_published);
	RUN(test_read_requests_of_the_spec);
	RUN(test_frames);
	RUN(test_answers_of_the_spec);
	RUN(test_strict_answers);
	RUN(test_values_in_every_order);
	RUN(test_scale_bits_strings);
	RUN(test_plan_merges_within_gap_and_limit);
	RUN(test_plan_splits_on_exception_2);
	TEST_END();
}
