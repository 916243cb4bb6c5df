/* backoff.c - the one backoff schedule of outputs and drivers. Its own
 * file, so that a unit test may link a fake of it. */
#include "loop.h"

int64_t backoff_delay(int64_t base_ms, int64_t cap_ms, unsigned attempt)
{
	int64_t d = base_ms;

	for (unsigned i = 0; i < attempt && d < cap_ms; i++)
		d *= 2;
	if (d > cap_ms)
		d = cap_ms;
	/* Jitter in [d/2, d] keeps many gateways from reconnecting in step. */
	return d / 2 + (int64_t)((uint64_t)loop_random() % (uint64_t)(d - d / 2 + 1));
}
