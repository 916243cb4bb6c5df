/* regression.c - replays fuzz inputs through LLVMFuzzerTestOneInput without
 * libFuzzer, so the committed corpora run in every test build.
 *
 *   regression DIR|FILE...
 *
 * Each argument is a file or a directory whose regular files are replayed
 * (not recursively). An input that breaks an invariant aborts the program
 * after its name has been printed; otherwise it prints the count and exits 0.
 */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mem.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *current;

/* Names the input when an invariant check aborts (only write(2) is safe in
 * a signal handler). */
static void on_abort(int sig)
{
	static const char msg[] = "regression: failing input: ";

	if (current) {
		(void)!write(2, msg, sizeof(msg) - 1);
		(void)!write(2, current, strlen(current));
		(void)!write(2, "\n", 1);
	}
	signal(sig, SIG_DFL);
	raise(sig);
}

static int replay_file(const char *path)
{
	uint8_t *data = NULL;
	size_t len = 0, cap = 0, n;
	FILE *f;
	int err = 0;

	f = fopen(path, "rb");
	if (!f) {
		fprintf(stderr, "%s: %s\n", path, strerror(errno));
		return -errno;
	}
	for (;;) {
		if (len == cap) {
			size_t ncap = cap ? cap * 2 : 4096;
			uint8_t *p = xrealloc(data, ncap);

			if (!p) {
				err = -ENOMEM;
				goto out_free;
			}
			data = p;
			cap = ncap;
		}
		n = fread(data + len, 1, cap - len, f);
		len += n;
		if (n == 0)
			break;
	}
	if (ferror(f)) {
		fprintf(stderr, "%s: read error\n", path);
		err = -EIO;
		goto out_free;
	}
	current = path;
	LLVMFuzzerTestOneInput(data, len);
	current = NULL;

out_free:
	xfree(data);
	fclose(f);
	return err;
}

static int replay_path(const char *path, long *count)
{
	struct dirent **names;
	struct stat st;
	char *child;
	int n, err = 0;

	if (stat(path, &st)) {
		fprintf(stderr, "%s: %s\n", path, strerror(errno));
		return -errno;
	}
	if (!S_ISDIR(st.st_mode)) {
		if ((err = replay_file(path)) == 0)
			(*count)++;
		return err;
	}
	/* Sorted, so a failure reproduces in the same order everywhere. */
	n = scandir(path, &names, NULL, alphasort);
	if (n < 0) {
		fprintf(stderr, "%s: %s\n", path, strerror(errno));
		return -errno;
	}
	for (int i = 0; i < n; i++) {
		size_t sz = strlen(path) + strlen(names[i]->d_name) + 2;

		child = xmalloc(sz);
		if (!child) {
			err = -ENOMEM;
		} else {
			snprintf(child, sz, "%s/%s", path, names[i]->d_name);
			if (!stat(child, &st) && S_ISREG(st.st_mode)) {
				int rc = replay_file(child);

				if (rc)
					err = rc;
				else
					(*count)++;
			}
			xfree(child);
		}
		free(names[i]);
	}
	free(names);
	return err;
}

int main(int argc, char **argv)
{
	long count = 0;
	int err = 0;

	signal(SIGABRT, on_abort);
	if (argc < 2) {
		fprintf(stderr, "usage: %s DIR|FILE...\n", argv[0]);
		return 2;
	}
	for (int i = 1; i < argc; i++)
		if (replay_path(argv[i], &count))
			err = 1;
	printf("%ld fuzz inputs replayed%s\n", count, err ? ", some unreadable" : "");
	return err;
}
