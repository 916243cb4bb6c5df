/* utf8_ref.h - a plain UTF-8 decoder the tests hold utf8_valid() to. */
#ifndef UTF8_REF_H
#define UTF8_REF_H

#include <stddef.h>
#include <stdint.h>

/* A plain decoder to hold utf8_valid to: decode each sequence by its lead
 * byte, then refuse overlongs, surrogates and code points above U+10FFFF.
 * Returns the offset of the first bad sequence, or len. */
static inline size_t ref_utf8_bad(const unsigned char *s, size_t len)
{
	size_t i = 0, need;
	uint32_t cp;

	while (i < len) {
		unsigned char c = s[i];

		if (c < 0x80) {
			i++;
			continue;
		}
		if ((c & 0xE0) == 0xC0) {
			need = 2;
			cp = c & 0x1F;
		} else if ((c & 0xF0) == 0xE0) {
			need = 3;
			cp = c & 0x0F;
		} else if ((c & 0xF8) == 0xF0) {
			need = 4;
			cp = c & 0x07;
		} else {
			return i;
		}
		if (len - i < need)
			return i;
		for (size_t k = 1; k < need; k++) {
			if ((s[i + k] & 0xC0) != 0x80)
				return i;
			cp = cp << 6 | (s[i + k] & 0x3F);
		}
		if ((need == 2 && cp < 0x80) || (need == 3 && cp < 0x800) ||
		    (need == 4 && cp < 0x10000) || cp > 0x10FFFF ||
		    (cp >= 0xD800 && cp <= 0xDFFF))
			return i;
		i += need;
	}
	return len;
}

#endif
