/* exec.c - the `exec` input: runs a command on an interval and ships each
 * line of its standard output as a record.
 *
 * Runs start on deadlines that are multiples of the interval, like the
 * sampling drivers' samples, and never overlap: a deadline that comes while
 * the previous run is still going is skipped and counted. Each run is a
 * process group of its own, so a timeout kills the command and everything
 * it started (SIGTERM, then SIGKILL after kill_grace). Nothing here waits:
 * the pipes are non-blocking fd watches, the exit comes through a
 * loop_child watch, and whether exec(2) worked comes back through a
 * close-on-exec status pipe that is read once the child has exited.
 *
 * stdout is framed into lines (lines.h) and each line is a record stamped
 * with the run's start time; stderr goes to the agent's log, at most
 * stderr_lines a run. Keys are "<input>:<run>:<line>", where the run number
 * is a position saved with the run's records, so they never repeat across
 * restarts. The output cannot be read again: the core keeps copies of the
 * records of an open commit and appends them again if it fails
 * (DRIVER_REPLAY).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "driver.h"

extern char **environ;

/* Reads per fd event, so a command that writes without pause cannot keep
 * the loop to itself. */
#define READS_PER_EVENT 16
#define READ_CHUNK 16384
#define ERR_MAX_LINE 1024       /* a longer stderr line is logged by its head */
#define LAST_ERR_MAX 200        /* the stderr line quoted in status */
#define POS_SOURCE "run"

struct exec_conf {
	char *command;
	bool shell;
	int64_t interval_ms, timeout_ms, kill_grace_ms;
	struct cfg_list env;
	char *working_dir;
	int64_t max_output;
	int64_t stderr_lines;
};

#define EK(f) offsetof(struct exec_conf, f)
static const struct cfg_key exec_keys[] = {
	{ .name = "command", .type = CFG_STR, .offset = EK(command), .required = true,
	  .example = "/usr/bin/sensors -j",
	  .help = "The program and its arguments, split into words at blanks; 'single' and \"double\" "
		  "quotes group words and a backslash escapes the next character. No shell runs it: "
		  "no $VARIABLES, globs, pipes or redirections (set shell = true for those). A program "
		  "without a '/' is looked up in PATH." },
	{ .name = "shell", .type = CFG_BOOL, .def = "false", .offset = EK(shell),
	  .help = "Run the command as /bin/sh -c \"<command>\", for pipelines, redirections and "
		  "variables. Off by default: no shell reads the command unless asked." },
	{ .name = "interval", .type = CFG_DURATION, .def = "60s", .offset = EK(interval_ms),
	  .min = 100, .max = 86400000,
	  .help = "How often the command runs, on deadlines that are multiples of the interval. A "
		  "deadline that comes while the previous run is still going is skipped and counted: "
		  "never two runs at once." },
	{ .name = "timeout", .type = CFG_DURATION, .def = "10s", .offset = EK(timeout_ms),
	  .min = 10, .max = 86400000,
	  .help = "How long a run may take. Then its whole process group gets SIGTERM, and SIGKILL "
		  "kill_grace later; the run is counted as timed out." },
	{ .name = "kill_grace", .type = CFG_DURATION, .def = "2s", .offset = EK(kill_grace_ms),
	  .min = 0, .max = 3600000,
	  .help = "Time between SIGTERM and SIGKILL after a timeout (0: SIGKILL at once)." },
	{ .name = "env", .type = CFG_LIST, .offset = EK(env), .example = "LANG=C,TZ=UTC",
	  .help = "Environment variables NAME=value added to (or replacing those of) the agent's "
		  "environment for the command. A value cannot hold a comma." },
	{ .name = "working_dir", .type = CFG_STR, .offset = EK(working_dir), .example = "/var/lib/agentd",
	  .help = "Absolute directory the command runs in; unset: the agent's own." },
	{ .name = "max_output", .type = CFG_SIZE, .def = "1MiB", .offset = EK(max_output),
	  .min = 1, .max = 1LL << 30,
	  .help = "Bytes of standard output one run may write. Beyond it the run is killed and "
		  "counted, the cut line dead-lettered and the rest reported as a gap." },
	{ .name = "stderr_lines", .type = CFG_INT, .def = "10", .offset = EK(stderr_lines),
	  .min = 0, .max = 100000,
	  .help = "Lines of the command's standard error written to the agent's log per run; the "
		  "rest are counted, not logged. Standard error never becomes records." },
	{ .name = NULL },
};

/* Where the child failed before it ran the command (the status pipe). */
enum { STAGE_CHDIR = 1, STAGE_EXEC = 2, STAGE_SETUP = 3 };

struct child_fail {
	int stage, err;
};

/* One run of the command. */
struct run {
	int pid;
	struct loop_child child;
	struct loop_fd out, err;
	int status_fd;
	struct lines out_lines, err_lines;
	struct sample_time t;        /* when the run started: every record's time */
	int64_t start_ms;
	uint64_t number;
	int64_t line_no;             /* lines of stdout handed over */
	int64_t out_bytes;
	bool exited, out_done, err_done, out_eof;
	int wstatus;
	struct child_fail fail;
	bool term_sent, kill_sent, timed_out, cut;
	bool header_done, gap_done;
	int64_t err_seen, err_dropped;
	char last_err[LAST_ERR_MAX];
	char path[4096];             /* the program run */
};

struct exec {
	struct input *in;
	const struct exec_conf *c;
	char **argv;                 /* split once at start (shell: sh -c command) */
	struct loop_timer tick, kill_timer, retry_timer;
	int64_t stall_seen;
	bool running, waiting;       /* waiting: the queue refused a line */
	struct run r;
	uint64_t run_no;             /* of the last run started (saved as a position) */
	/* For status. */
	int64_t runs, failed, signalled, timeouts, cut, skipped, err_dropped;
	int last_status, last_signal;
	int64_t last_ms, last_lines;
	char last_outcome[64];
};

/* ---- words of the command ---------------------------------------------- */

static void free_words(char **w)
{
	if (!w)
		return;
	for (char **p = w; *p; p++)
		xfree(*p);
	xfree(w);
}

/* Split s into words as a shell would without expanding anything: blanks
 * separate, '...' is literal, "..." takes \" and \\, a backslash outside
 * quotes escapes the next character. Shell syntax outside quotes is
 * refused, so that a pipeline is not run as arguments. 0 (*out: a
 * NULL-terminated array), -EINVAL with err, or -ENOMEM. */
static int split_words(const char *s, char ***out, char *err, size_t errlen)
{
	size_t n = 0, cap = 4, len = strlen(s);
	char **w = xcalloc(cap + 1, sizeof(*w)), *cur = NULL;
	size_t cl = 0;
	int rc = 0;

	if (!w)
		return -ENOMEM;
	for (size_t i = 0; i <= len; i++) {
		char ch = s[i];

		if (ch == ' ' || ch == '\t' || ch == '\0') {
			if (!cur)
				continue;
			cur[cl] = '\0';
			if (n == cap) {
				char **nw = xrealloc(w, (cap * 2 + 1) * sizeof(*w));

				if (!nw) {
					xfree(cur);
					rc = -ENOMEM;
					goto out_fail;
				}
				w = nw;
				cap *= 2;
			}
			w[n++] = cur;
			w[n] = NULL;
			cur = NULL;
			continue;
		}
		if (!cur) {
			/* A word is never longer than the rest of the text. */
			cur = xmalloc(len - i + 1);
			if (!cur) {
				rc = -ENOMEM;
				goto out_fail;
			}
			cl = 0;
		}
		if (ch == '\'') {
			const char *q = strchr(s + i + 1, '\'');

			if (!q)
				goto out_quote;
			memcpy(cur + cl, s + i + 1, (size_t)(q - s - i - 1));
			cl += (size_t)(q - s - i - 1);
			i = (size_t)(q - s);
		} else if (ch == '"') {
			for (i++; s[i] != '"'; i++) {
				if (!s[i])
					goto out_quote;
				if (s[i] == '\\' && (s[i + 1] == '"' || s[i + 1] == '\\'))
					i++;
				cur[cl++] = s[i];
			}
		} else if (ch == '\\') {
			if (s[i + 1])
				i++;
			cur[cl++] = s[i];
		} else if (strchr("|&;<>`$()", ch)) {
			snprintf(err, errlen, "'%c' is shell syntax, but no shell runs the command: set "
				 "shell = true, or quote it", ch);
			xfree(cur);
			rc = -EINVAL;
			goto out_fail;
		} else {
			cur[cl++] = ch;
		}
	}
	if (!n) {
		snprintf(err, errlen, "no program to run");
		rc = -EINVAL;
		goto out_fail;
	}
	*out = w;
	return 0;
out_quote:
	snprintf(err, errlen, "a quote is not closed");
	xfree(cur);
	rc = -EINVAL;
out_fail:
	free_words(w);
	return rc;
}

static bool env_name_ok(const char *item)
{
	const char *eq = strchr(item, '=');

	if (!eq || eq == item || (item[0] >= '0' && item[0] <= '9'))
		return false;
	for (const char *p = item; p < eq; p++)
		if (!(*p == '_' || (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		      (*p >= '0' && *p <= '9')))
			return false;
	return true;
}

static int exec_validate(const void *conf, char *err, size_t errlen)
{
	const struct exec_conf *c = conf;
	char why[160];
	char **w = NULL;
	int rc;

	if (!c->shell) {
		rc = split_words(c->command, &w, why, sizeof(why));
		if (rc == -ENOMEM)
			return rc;
		if (rc) {
			snprintf(err, errlen, "key 'command': %s", why);
			return rc;
		}
		free_words(w);
	} else if (!c->command[strspn(c->command, " \t")]) {
		snprintf(err, errlen, "key 'command': no command to run");
		return -EINVAL;
	}
	for (size_t i = 0; i < c->env.n; i++) {
		if (!env_name_ok(c->env.v[i])) {
			snprintf(err, errlen, "key 'env': '%s' is not NAME=value (a name of letters, "
				 "digits and '_')", c->env.v[i]);
			return -EINVAL;
		}
	}
	if (c->working_dir && c->working_dir[0] != '/') {
		snprintf(err, errlen, "key 'working_dir': '%s' is not an absolute path", c->working_dir);
		return -EINVAL;
	}
	return 0;
}

/* ---- starting a run ---------------------------------------------------- */

/* The environment of the command: the agent's, with `env` added or
 * replacing. The strings are borrowed. NULL on out of memory. */
static char **build_env(const struct exec_conf *c)
{
	size_t n = 0, k = 0;
	char **e;

	for (char **p = environ; p && *p; p++)
		n++;
	e = xcalloc(n + c->env.n + 1, sizeof(*e));
	if (!e)
		return NULL;
	for (char **p = environ; p && *p; p++) {
		bool replaced = false;

		for (size_t i = 0; i < c->env.n && !replaced; i++) {
			size_t nl = (size_t)(strchr(c->env.v[i], '=') - c->env.v[i]) + 1;

			replaced = !strncmp(*p, c->env.v[i], nl);
		}
		if (!replaced)
			e[k++] = *p;
	}
	for (size_t i = 0; i < c->env.n; i++)
		e[k++] = c->env.v[i];
	e[k] = NULL;
	return e;
}

/* The value of PATH the command gets. */
static const char *child_path(const struct exec_conf *c)
{
	const char *p = NULL;

	for (size_t i = 0; i < c->env.n; i++)
		if (!strncmp(c->env.v[i], "PATH=", 5))
			p = c->env.v[i] + 5;
	if (!p)
		p = getenv("PATH");
	return p && *p ? p : "/usr/local/bin:/usr/bin:/bin";
}

/* Find the program as execvp(3) would, before forking (the child may only
 * make system calls). 0 with the path in buf, or -ENOENT / -EACCES. */
static int find_program(const struct exec_conf *c, const char *prog, char *buf, size_t len)
{
	const char *p;
	bool denied = false;

	if (strchr(prog, '/')) {
		if ((size_t)snprintf(buf, len, "%s", prog) >= len)
			return -ENAMETOOLONG;
		return 0;
	}
	for (p = child_path(c); ; p++) {
		const char *end = strchr(p, ':');
		size_t dl = end ? (size_t)(end - p) : strlen(p);
		struct stat st;

		if ((size_t)snprintf(buf, len, "%.*s%s%s", (int)dl, p, dl ? "/" : "", prog) < len &&
		    !stat(buf, &st) && S_ISREG(st.st_mode)) {
			if (!access(buf, X_OK))
				return 0;
			denied = true;
		}
		if (!end)
			break;
		p = end;
	}
	return denied ? -EACCES : -ENOENT;
}

static void child_report(int fd, int stage, int err)
{
	struct child_fail f = { stage, err };
	ssize_t n;

	do
		n = write(fd, &f, sizeof(f));
	while (n < 0 && errno == EINTR);
	_exit(127);
}

/* In the child: only system calls from here on (another thread of the
 * agent may hold a lock of the allocator). */
static void child_main(const struct exec_conf *c, const char *path, char **argv, char **envp,
		       int in_fd, int out_fd, int err_fd, int st_fd, long max_fd)
{
	struct sigaction dfl;
	sigset_t none;

	setpgid(0, 0);
	/* The agent ignores SIGPIPE: the command gets every signal back to its
	 * default, and none blocked. */
	memset(&dfl, 0, sizeof(dfl));
	dfl.sa_handler = SIG_DFL;
	for (int s = 1; s < NSIG; s++)
		if (s != SIGKILL && s != SIGSTOP)
			sigaction(s, &dfl, NULL);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	/* Move the four fds out of the way first (an agent started with 0, 1
	 * or 2 closed gets pipes there), then put them at 0, 1, 2 and 3. */
	{
		int fds[4] = { in_fd, out_fd, err_fd, st_fd };

		for (int i = 0; i < 4; i++) {
			fds[i] = fcntl(fds[i], F_DUPFD_CLOEXEC, 10);
			if (fds[i] < 0)
				child_report(st_fd, STAGE_SETUP, errno);
		}
		for (int i = 0; i < 4; i++)
			if (dup2(fds[i], i) < 0)
				child_report(fds[3], STAGE_SETUP, errno);
		st_fd = 3;
		fcntl(st_fd, F_SETFD, FD_CLOEXEC);
	}
	/* Nothing of the agent's leaks into the command: no socket, no queue. */
#ifdef SYS_close_range
	if (syscall(SYS_close_range, 4U, ~0U, 0U) != 0)
#endif
		for (long fd = 4; fd < max_fd; fd++)
			close((int)fd);
	if (c->working_dir && chdir(c->working_dir) < 0)
		child_report(st_fd, STAGE_CHDIR, errno);
	execve(path, argv, envp);
	child_report(st_fd, STAGE_EXEC, errno);
}

static void on_child(struct loop_child *ch, int status);
static void on_out(struct loop_fd *w, unsigned revents);
static void on_err(struct loop_fd *w, unsigned revents);
static void finish_run(struct exec *x);
static void set_state(struct exec *x);

static void close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

static int nonblocking(int fd)
{
	int fl = fcntl(fd, F_GETFL);

	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
		return -errno;
	return 0;
}

static const char *signal_name(int sig)
{
	static const struct {
		int sig;
		const char *name;
	} names[] = {
		{ SIGHUP, "SIGHUP" }, { SIGINT, "SIGINT" }, { SIGQUIT, "SIGQUIT" },
		{ SIGILL, "SIGILL" }, { SIGTRAP, "SIGTRAP" }, { SIGABRT, "SIGABRT" },
		{ SIGBUS, "SIGBUS" }, { SIGFPE, "SIGFPE" }, { SIGKILL, "SIGKILL" },
		{ SIGUSR1, "SIGUSR1" }, { SIGSEGV, "SIGSEGV" }, { SIGUSR2, "SIGUSR2" },
		{ SIGPIPE, "SIGPIPE" }, { SIGALRM, "SIGALRM" }, { SIGTERM, "SIGTERM" },
		{ SIGXCPU, "SIGXCPU" }, { SIGXFSZ, "SIGXFSZ" }, { SIGSYS, "SIGSYS" },
	};

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (names[i].sig == sig)
			return names[i].name;
	return "signal";
}

/* A run that could not be started: not connected, with why, and counted. */
static void count_start_failure(struct exec *x, const char *path, int stage, int err)
{
	char why[300];

	if (stage == STAGE_CHDIR)
		snprintf(why, sizeof(why), "cannot enter working_dir %s: %s", x->c->working_dir,
			 strerror(err));
	else if (err == ENOENT)
		snprintf(why, sizeof(why), "command not found: %s", path);
	else if (err == EACCES || err == EPERM)
		snprintf(why, sizeof(why), "permission denied: %s", path);
	else if (err == ENOEXEC)
		snprintf(why, sizeof(why), "not an executable: %s", path);
	else if (stage == STAGE_EXEC)
		snprintf(why, sizeof(why), "cannot run %s: %s", path, strerror(err));
	else
		snprintf(why, sizeof(why), "cannot start %s: %s", path, strerror(err));
	snprintf(x->last_outcome, sizeof(x->last_outcome), "not started");
	input_set_connected(x->in, false, "%s", why);
	input_count_error(x->in, INPUT_ERR_CONNECT, "%s", why);
}

static void start_run(struct exec *x)
{
	const struct exec_conf *c = x->c;
	struct run *r = &x->r;
	char path[4096], pos[32];
	int outp[2] = { -1, -1 }, errp[2] = { -1, -1 }, stp[2] = { -1, -1 }, devnull = -1;
	char **envp = NULL;
	struct rlimit rl;
	long max_fd = 1024;
	int rc, pid;

	rc = find_program(c, x->argv[0], path, sizeof(path));
	if (rc) {
		x->runs++;
		input_count_request(x->in);
		count_start_failure(x, x->argv[0], STAGE_EXEC, -rc);
		set_state(x);
		return;
	}
	/* The run's number is saved before its first record, in the same
	 * transaction, so its keys are never used again after a restart. */
	snprintf(pos, sizeof(pos), "%" PRIu64, x->run_no + 1);
	rc = input_save_position(x->in, POS_SOURCE, pos, strlen(pos));
	if (rc) {
		x->skipped++;
		input_count_missed(x->in, 1);
		if (rc != -EAGAIN)
			input_error(x->in, "cannot save the run number: %s", strerror(-rc));
		set_state(x);
		return;
	}
	x->run_no++;
	x->runs++;
	input_count_request(x->in);
	memset(r, 0, sizeof(*r));
	r->out.fd = r->err.fd = r->status_fd = -1;
	r->number = x->run_no;
	snprintf(r->path, sizeof(r->path), "%s", path);
	lines_init(&r->out_lines, (size_t)input_max_record_bytes(x->in));
	r->out_lines.strip_cr = true;
	lines_init(&r->err_lines, ERR_MAX_LINE);
	r->err_lines.strip_cr = true;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
		max_fd = rl.rlim_cur < (1 << 20) ? (long)rl.rlim_cur : 1 << 20;
	envp = build_env(c);
	if (!envp) {
		rc = -ENOMEM;
		goto out_fail;
	}
	if (pipe2(outp, O_CLOEXEC) < 0 || pipe2(errp, O_CLOEXEC) < 0 || pipe2(stp, O_CLOEXEC) < 0) {
		rc = -errno;
		goto out_fail;
	}
	devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (devnull < 0) {
		rc = -errno;
		goto out_fail;
	}
	/* Only the agent's ends are non-blocking: the command writes as to any
	 * pipe. */
	if ((rc = nonblocking(outp[0])) || (rc = nonblocking(errp[0])) || (rc = nonblocking(stp[0])))
		goto out_fail;
	input_sample_now(x->in, &r->t);
	r->start_ms = loop_now_ms();
	pid = fork();
	if (pid < 0) {
		rc = -errno;
		goto out_fail;
	}
	if (pid == 0)
		child_main(c, path, x->argv, envp, devnull, outp[1], errp[1], stp[1], max_fd);
	/* Both sides set the group, so that it exists whichever runs first. */
	setpgid(pid, pid);
	xfree(envp);
	close(devnull);
	close(outp[1]);
	close(errp[1]);
	close(stp[1]);
	r->pid = pid;
	r->status_fd = stp[0];
	r->child.pid = pid;
	r->child.cb = on_child;
	r->out.fd = outp[0];
	r->out.events = LOOP_READ;
	r->out.cb = on_out;
	r->err.fd = errp[0];
	r->err.events = LOOP_READ;
	r->err.cb = on_err;
	x->running = true;
	if ((rc = loop_child_add(input_loop(x->in), &r->child)) ||
	    (rc = loop_fd_add(input_loop(x->in), &r->out)) ||
	    (rc = loop_fd_add(input_loop(x->in), &r->err))) {
		/* Cannot watch it: it must not run unwatched. */
		input_error(x->in, "cannot watch the command: %s", strerror(-rc));
		kill(-pid, SIGKILL);
		r->kill_sent = true;
		if (!r->child.added) {
			while (waitpid(pid, &r->wstatus, 0) < 0 && errno == EINTR)
				;
			r->exited = true;
		}
		loop_fd_del(input_loop(x->in), &r->out);
		loop_fd_del(input_loop(x->in), &r->err);
		close_fd(&r->out.fd);
		close_fd(&r->err.fd);
		r->out_done = r->err_done = true;
		if (r->exited)
			finish_run(x);
		return;
	}
	loop_timer_set(input_loop(x->in), &x->kill_timer, c->timeout_ms);
	set_state(x);
	return;
out_fail:
	xfree(envp);
	close_fd(&devnull);
	close_fd(&outp[0]);
	close_fd(&outp[1]);
	close_fd(&errp[0]);
	close_fd(&errp[1]);
	close_fd(&stp[0]);
	close_fd(&stp[1]);
	lines_release(&r->out_lines);
	lines_release(&r->err_lines);
	count_start_failure(x, path, STAGE_SETUP, -rc);
	set_state(x);
}

/* ---- the run's output -------------------------------------------------- */

static void line_key(const struct exec *x, int64_t line, char *key, size_t len)
{
	snprintf(key, len, "%s:%" PRIu64 ":%" PRId64, input_name(x->in), x->r.number, line);
}

/* Hand one line over; 0 when taken, -EAGAIN (or another error) when the
 * queue did not take it and it is to be handed over again. */
static int take_line(struct exec *x, const struct lines_rec *l)
{
	struct run *r = &x->r;
	char key[128];
	int rc;

	line_key(x, r->line_no + 1, key, sizeof(key));
	if (l->too_long) {
		rc = input_reject(x->in, l->data, l->len, key, l->too_long);
	} else if (input_wants_header(x->in) && !r->header_done) {
		rc = input_set_header(x->in, l->data, l->len);
		if (!rc)
			r->header_done = true;
	} else {
		rc = input_emit_at(x->in, l->data, l->len, key, &r->t);
	}
	if (rc)
		return rc;
	r->line_no++;
	return 0;
}

static int64_t on_retry(struct loop_timer *t);

/* The queue did not take a line: stop reading until it does. */
static void pause_output(struct exec *x, int rc)
{
	x->waiting = true;
	set_state(x);
	/* Off the loop, not just without events: a pipe whose writer has
	 * gone reports a hang-up whatever events are asked for. */
	loop_fd_del(input_loop(x->in), &x->r.out);
	if (rc != -EAGAIN) {
		/* A queue error: try again in a second. */
		input_error(x->in, "cannot hand a line over: %s", strerror(-rc));
		loop_timer_set(input_loop(x->in), &x->retry_timer, 1000);
	}
}

/* Hand over every complete line buffered; false when the queue refused. */
static bool drain_lines(struct exec *x)
{
	struct lines_rec l;
	int rc;

	while (lines_next(&x->r.out_lines, &l) == 1) {
		rc = take_line(x, &l);
		if (rc) {
			pause_output(x, rc);
			return false;
		}
		lines_consume(&x->r.out_lines);
	}
	return true;
}

/* stdout ended: the bytes after the last newline are a line too. */
static bool flush_lines(struct exec *x)
{
	struct lines_rec l;
	int rc;

	if (!drain_lines(x))
		return false;
	rc = lines_flush(&x->r.out_lines, &l);
	if (rc < 0) {
		input_error(x->in, "out of memory for the last line of run %" PRIu64, x->r.number);
		return true;
	}
	if (rc == 1) {
		rc = take_line(x, &l);
		if (rc) {
			pause_output(x, rc);
			return false;
		}
		lines_consume(&x->r.out_lines);
	}
	return true;
}

static void kill_group(struct exec *x, int sig)
{
	if (x->r.pid > 0)
		kill(-x->r.pid, sig);
}

static void close_out(struct exec *x)
{
	loop_fd_del(input_loop(x->in), &x->r.out);
	close_fd(&x->r.out.fd);
}

static void maybe_finish(struct exec *x)
{
	struct run *r = &x->r;

	if (x->running && r->exited && r->out_done && r->err_done)
		finish_run(x);
}

/* After a cut: the lines before it are handed over, the line it fell in
 * is dead-lettered and the rest of the output is reported as a gap.
 * Returns false when the queue refused (called again on resume). */
static bool cut_rest(struct exec *x)
{
	struct run *r = &x->r;
	struct lines_rec l;
	char key[128], why[160], src[160];
	int rc;

	if (!drain_lines(x))
		return false;
	if (lines_buffered(&r->out_lines) && lines_flush(&r->out_lines, &l) == 1) {
		line_key(x, r->line_no + 1, key, sizeof(key));
		snprintf(why, sizeof(why), "cut at max_output (%" PRId64 " bytes)", x->c->max_output);
		rc = input_reject(x->in, l.data, l.len, key, why);
		if (rc) {
			pause_output(x, rc);
			return false;
		}
		lines_consume(&r->out_lines);
		r->line_no++;
	}
	if (!r->gap_done) {
		snprintf(key, sizeof(key), "%s:%" PRIu64 ":cut", input_name(x->in), r->number);
		snprintf(src, sizeof(src), "%s run %" PRIu64, input_name(x->in), r->number);
		rc = input_gap(x->in, src, r->out_bytes, -1, "max_output", key);
		if (rc) {
			pause_output(x, rc);
			return false;
		}
		r->gap_done = true;
	}
	r->out_done = true;
	return true;
}

/* The output went past max_output: the run is killed at once. */
static void output_cut(struct exec *x)
{
	struct run *r = &x->r;

	r->cut = true;
	x->cut++;
	kill_group(x, SIGKILL);
	r->kill_sent = true;
	close_out(x);
	r->out_eof = true;
	input_count_error(x->in, INPUT_ERR_VALUE, "run %" PRIu64 " wrote more than max_output (%" PRId64
			  " bytes): killed", r->number, x->c->max_output);
	cut_rest(x);
	maybe_finish(x);
}

static void read_out(struct exec *x)
{
	struct run *r = &x->r;

	for (int i = 0; i < READS_PER_EVENT && !x->waiting && r->out.fd >= 0; i++) {
		size_t avail, want;
		char *p, probe;
		ssize_t n;

		if (r->out_bytes >= x->c->max_output) {
			/* At the limit: one byte more means it was passed. */
			n = read(r->out.fd, &probe, 1);
			if (n > 0) {
				output_cut(x);
				return;
			}
		} else {
			want = (size_t)(x->c->max_output - r->out_bytes);
			if (want > READ_CHUNK)
				want = READ_CHUNK;
			p = lines_space(&r->out_lines, want, &avail);
			if (!p) {
				input_error(x->in, "out of memory reading run %" PRIu64, r->number);
				return;
			}
			if (avail > want)
				avail = want;
			n = read(r->out.fd, p, avail);
			if (n > 0) {
				lines_added(&r->out_lines, (size_t)n);
				r->out_bytes += n;
				if (!drain_lines(x))
					return;
				continue;
			}
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return;
		if (n < 0)
			input_count_error(x->in, INPUT_ERR_IO, "reading the output of run %" PRIu64 ": %s",
					  r->number, strerror(errno));
		/* End of the output (or an error: what was read is kept). */
		close_out(x);
		r->out_eof = true;
		if (flush_lines(x))
			r->out_done = true;
		maybe_finish(x);
		return;
	}
}

static void on_out(struct loop_fd *w, unsigned revents)
{
	struct exec *x = container_of(w, struct exec, r.out);

	read_out(x);
}

static void err_line(struct exec *x, const char *data, size_t len)
{
	struct run *r = &x->r;
	size_t keep = len < sizeof(r->last_err) - 1 ? len : sizeof(r->last_err) - 1;

	if (!len)
		return;
	r->err_seen++;
	memcpy(r->last_err, data, keep);
	r->last_err[keep] = '\0';
	for (char *p = r->last_err; *p; p++)
		if ((unsigned char)*p < 0x20)
			*p = ' ';
	if (r->err_seen <= x->c->stderr_lines)
		log_warn("input %s: run %" PRIu64 " stderr: %s", input_name(x->in), r->number,
			 r->last_err);
	else
		r->err_dropped++;
}

static void read_err(struct exec *x)
{
	struct run *r = &x->r;
	struct lines_rec l;

	for (int i = 0; i < READS_PER_EVENT; i++) {
		size_t avail;
		char *p = lines_space(&r->err_lines, READ_CHUNK, &avail);
		ssize_t n;

		if (!p)
			return;
		n = read(r->err.fd, p, avail);
		if (n > 0) {
			lines_added(&r->err_lines, (size_t)n);
			while (lines_next(&r->err_lines, &l) == 1) {
				err_line(x, l.data, l.len);
				lines_consume(&r->err_lines);
			}
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return;
		while (lines_flush(&r->err_lines, &l) == 1) {
			err_line(x, l.data, l.len);
			lines_consume(&r->err_lines);
		}
		loop_fd_del(input_loop(x->in), &r->err);
		close_fd(&r->err.fd);
		r->err_done = true;
		maybe_finish(x);
		return;
	}
}

static void on_err(struct loop_fd *w, unsigned revents)
{
	struct exec *x = container_of(w, struct exec, r.err);

	read_err(x);
}

/* ---- the end of a run -------------------------------------------------- */

static void on_child(struct loop_child *ch, int status)
{
	struct exec *x = container_of(ch, struct exec, r.child);
	struct run *r = &x->r;
	ssize_t n;

	r->exited = true;
	r->wstatus = status;
	/* The child has exited, so what it wrote to the status pipe is there:
	 * nothing means exec(2) worked (the pipe closed with it). */
	n = read(r->status_fd, &r->fail, sizeof(r->fail));
	if (n != (ssize_t)sizeof(r->fail))
		memset(&r->fail, 0, sizeof(r->fail));
	close_fd(&r->status_fd);
	/* Output still held open by what the command left behind is read
	 * until the timeout. */
	maybe_finish(x);
}

static void fmt_duration(char *buf, size_t len, int64_t ms)
{
	if (ms < 1000)
		snprintf(buf, len, "%" PRId64 " ms", ms);
	else if (ms % 1000 == 0)
		snprintf(buf, len, "%" PRId64 "s", ms / 1000);
	else
		snprintf(buf, len, "%.1fs", (double)ms / 1000.0);
}

static void set_state(struct exec *x)
{
	char s[128], d[32];
	size_t n = 0;

#define ADD(...)                                                                         \
	do {                                                                             \
		if (n < sizeof(s))                                                       \
			n += (size_t)snprintf(s + n, sizeof(s) - n, __VA_ARGS__);        \
	} while (0)
	ADD("%" PRId64 " run%s", x->runs, x->runs == 1 ? "" : "s");
	if (x->failed)
		ADD(", %" PRId64 " exit!=0 (last %d)", x->failed, x->last_status);
	if (x->signalled)
		ADD(", %" PRId64 " by signal (last %s)", x->signalled, signal_name(x->last_signal));
	if (x->timeouts)
		ADD(", %" PRId64 " timed out", x->timeouts);
	if (x->cut)
		ADD(", %" PRId64 " over max_output", x->cut);
	if (x->skipped)
		ADD(", %" PRId64 " skipped", x->skipped);
	if (x->running) {
		ADD("; run %" PRIu64 " running%s", x->r.number,
		    x->waiting ? ", its output waiting for the queue" : "");
	} else if (x->last_outcome[0]) {
		fmt_duration(d, sizeof(d), x->last_ms);
		ADD("; last: %s, %s, %" PRId64 " line%s", x->last_outcome, d, x->last_lines,
		    x->last_lines == 1 ? "" : "s");
	}
#undef ADD
	input_set_state(x->in, "%s", s);
}

/* The last stderr line, as ": line", or "". */
static void err_suffix(const struct run *r, char *buf, size_t len)
{
	if (r->last_err[0])
		snprintf(buf, len, ": %s", r->last_err);
	else
		buf[0] = '\0';
}

static void finish_run(struct exec *x)
{
	struct run *r = &x->r;
	struct loop *l = input_loop(x->in);
	char tmo[32], grace[32], tail[LAST_ERR_MAX + 4];
	bool clean = false;

	loop_timer_cancel(l, &x->kill_timer);
	loop_timer_cancel(l, &x->retry_timer);
	/* What the command left running in its group goes with it. */
	if (!r->kill_sent)
		kill_group(x, SIGKILL);
	x->running = false;
	x->waiting = false;
	x->last_ms = loop_now_ms() - r->start_ms;
	x->last_lines = r->line_no;
	err_suffix(r, tail, sizeof(tail));
	fmt_duration(tmo, sizeof(tmo), x->c->timeout_ms);
	fmt_duration(grace, sizeof(grace), x->c->kill_grace_ms);
	if (r->fail.stage) {
		x->last_lines = 0;
		count_start_failure(x, r->path,
				    r->fail.stage, r->fail.err);
	} else if (r->timed_out) {
		x->timeouts++;
		snprintf(x->last_outcome, sizeof(x->last_outcome), "timed out");
		if (r->kill_sent && x->c->kill_grace_ms)
			input_count_error(x->in, INPUT_ERR_TIMEOUT, "run %" PRIu64 " killed after timeout %s "
					  "(SIGKILL: still running %s after SIGTERM)%s", r->number, tmo,
					  grace, tail);
		else
			input_count_error(x->in, INPUT_ERR_TIMEOUT, "run %" PRIu64 " killed after timeout %s%s",
					  r->number, tmo, tail);
	} else if (r->cut) {
		snprintf(x->last_outcome, sizeof(x->last_outcome), "killed at max_output");
	} else if (r->exited && WIFEXITED(r->wstatus) && WEXITSTATUS(r->wstatus)) {
		x->failed++;
		x->last_status = WEXITSTATUS(r->wstatus);
		snprintf(x->last_outcome, sizeof(x->last_outcome), "exit %d", x->last_status);
		input_count_error(x->in, INPUT_ERR_EXCEPTION, "run %" PRIu64 " exited with status %d%s",
				  r->number, x->last_status, tail);
	} else if (r->exited && WIFSIGNALED(r->wstatus)) {
		x->signalled++;
		x->last_signal = WTERMSIG(r->wstatus);
		snprintf(x->last_outcome, sizeof(x->last_outcome), "killed by %s",
			 signal_name(x->last_signal));
		input_count_error(x->in, INPUT_ERR_EXCEPTION, "run %" PRIu64 " killed by signal %d (%s)%s",
				  r->number, x->last_signal, signal_name(x->last_signal), tail);
	} else if (r->exited && r->wstatus < 0) {
		snprintf(x->last_outcome, sizeof(x->last_outcome), "exit unknown");
		input_error(x->in, "run %" PRIu64 ": its exit status was taken by another part of the "
			    "agent", r->number);
	} else {
		snprintf(x->last_outcome, sizeof(x->last_outcome), "exit 0");
		clean = true;
	}
	if (!r->fail.stage)
		input_set_connected(x->in, true, "%s", "");
	if (clean)
		input_clear_error(x->in);
	if (r->err_dropped) {
		x->err_dropped += r->err_dropped;
		log_warn("input %s: run %" PRIu64 ": %" PRId64 " more stderr line%s not logged "
			 "(stderr_lines = %" PRId64 ")", input_name(x->in), r->number, r->err_dropped,
			 r->err_dropped == 1 ? "" : "s", x->c->stderr_lines);
	}
	loop_fd_del(l, &r->out);
	loop_fd_del(l, &r->err);
	close_fd(&r->out.fd);
	close_fd(&r->err.fd);
	close_fd(&r->status_fd);
	lines_release(&r->out_lines);
	lines_release(&r->err_lines);
	r->pid = 0;
	set_state(x);
}

/* The timeout, then kill_grace after SIGTERM; then, if the output is still
 * held open by a process that left the group, it is given up. */
static int64_t on_kill_timer(struct loop_timer *t)
{
	struct exec *x = container_of(t, struct exec, kill_timer);
	struct run *r = &x->r;

	if (!x->running)
		return -1;
	/* The command is done and only its output waits for the queue: that
	 * is no timeout of the command's. */
	if (r->exited && x->waiting && !r->term_sent && !r->kill_sent)
		return 1000;
	if (!r->term_sent && !r->kill_sent) {
		r->timed_out = true;
		r->term_sent = true;
		if (x->c->kill_grace_ms) {
			kill_group(x, SIGTERM);
			return x->c->kill_grace_ms;
		}
	}
	if (!r->kill_sent) {
		r->timed_out = true;
		r->kill_sent = true;
		kill_group(x, SIGKILL);
		return 1000;
	}
	if (x->waiting)
		return 1000;            /* lines wait for the queue: keep the pipe */
	if (!r->out_done) {
		close_out(x);
		r->out_eof = true;
		if (flush_lines(x))
			r->out_done = true;
	}
	if (!r->err_done) {
		loop_fd_del(input_loop(x->in), &r->err);
		close_fd(&r->err.fd);
		r->err_done = true;
	}
	maybe_finish(x);
	return x->running ? 1000 : -1;
}

/* The queue takes records again: hand over what waits, read on. */
static void exec_resume(struct input *in, void *state)
{
	struct exec *x = state;
	struct run *r = &x->r;
	char pos[32];

	if (!x)
		return;
	/* A failed commit lost the saved run number with its records, which
	 * the core appends again: save it again with them. */
	if (x->run_no) {
		snprintf(pos, sizeof(pos), "%" PRIu64, x->run_no);
		input_save_position(in, POS_SOURCE, pos, strlen(pos));
	}
	if (!x->running || !x->waiting)
		return;
	x->waiting = false;
	set_state(x);
	loop_timer_cancel(input_loop(in), &x->retry_timer);
	if (r->cut) {
		if (!r->out_done)
			cut_rest(x);
	} else if (r->out_eof) {
		if (flush_lines(x))
			r->out_done = true;
	} else if (drain_lines(x) && r->out.fd >= 0 && !r->out.added) {
		int rc;

		r->out.events = LOOP_READ;
		rc = loop_fd_add(input_loop(in), &r->out);
		if (rc) {
			input_count_error(in, INPUT_ERR_IO, "cannot watch the output of run %" PRIu64
					  " again: %s", r->number, strerror(-rc));
			close_out(x);
			r->out_eof = true;
			if (flush_lines(x))
				r->out_done = true;
		}
	}
	maybe_finish(x);
}

static int64_t on_retry(struct loop_timer *t)
{
	struct exec *x = container_of(t, struct exec, retry_timer);

	exec_resume(x->in, x);
	return -1;
}

/* ---- the schedule ------------------------------------------------------ */

static int64_t on_tick(struct loop_timer *t)
{
	struct exec *x = container_of(t, struct exec, tick);

	if (t->missed > x->stall_seen) {
		input_count_missed(x->in, t->missed - x->stall_seen);
		x->skipped += t->missed - x->stall_seen;
		x->stall_seen = t->missed;
	}
	if (x->running || input_blocked(x->in)) {
		/* Never two runs at once, and no run while the queue refuses. */
		x->skipped++;
		input_count_missed(x->in, 1);
		set_state(x);
		return 0;
	}
	start_run(x);
	return 0;
}

static void exec_stop(struct input *in, void *state)
{
	struct exec *x = state;
	struct loop *l = input_loop(in);

	if (!x)
		return;
	loop_timer_cancel(l, &x->tick);
	loop_timer_cancel(l, &x->kill_timer);
	loop_timer_cancel(l, &x->retry_timer);
	if (x->running) {
		struct run *r = &x->r;

		kill_group(x, SIGKILL);
		if (r->child.added) {
			/* Reap it here, or it stays a zombie: SIGKILL ends it at
			 * once unless it is stuck in the kernel, so the wait is
			 * short and bounded. */
			loop_child_del(l, &r->child);
			for (int i = 0; i < 1000; i++) {
				struct timespec ms = { 0, 1000000 };
				int st;
				int got = waitpid(r->pid, &st, WNOHANG);

				if (got == r->pid || (got < 0 && errno != EINTR))
					break;
				if (i == 999)
					log_warn("input %s: run %" PRIu64 " (pid %d) did not end on SIGKILL",
						 input_name(in), r->number, r->pid);
				nanosleep(&ms, NULL);
			}
		}
		loop_fd_del(l, &r->out);
		loop_fd_del(l, &r->err);
		close_fd(&r->out.fd);
		close_fd(&r->err.fd);
		close_fd(&r->status_fd);
		lines_release(&r->out_lines);
		lines_release(&r->err_lines);
	}
	free_words(x->argv);
	xfree(x);
}

static int exec_start(struct input *in, void **state)
{
	const struct exec_conf *c = input_driver_conf(in);
	struct exec *x = xcalloc(1, sizeof(*x));
	char err[160], iv[32];
	void *pos = NULL;
	size_t len = 0;
	int rc;

	*state = x;
	if (!x)
		return -ENOMEM;
	x->in = in;
	x->c = c;
	x->r.out.fd = x->r.err.fd = x->r.status_fd = -1;
	x->tick.cb = on_tick;
	x->kill_timer.cb = on_kill_timer;
	x->retry_timer.cb = on_retry;
	if (c->shell) {
		x->argv = xcalloc(4, sizeof(*x->argv));
		if (x->argv) {
			x->argv[0] = xstrdup("/bin/sh");
			x->argv[1] = xstrdup("-c");
			x->argv[2] = xstrdup(c->command);
		}
		rc = !x->argv || !x->argv[0] || !x->argv[1] || !x->argv[2] ? -ENOMEM : 0;
	} else {
		rc = split_words(c->command, &x->argv, err, sizeof(err));
	}
	if (rc) {
		input_error(in, "command: %s", rc == -ENOMEM ? "out of memory" : err);
		return rc;
	}
	/* Run numbers go on after the last one saved. */
	rc = input_load_position(in, POS_SOURCE, &pos, &len);
	if (!rc) {
		char num[32];
		char *end;

		snprintf(num, sizeof(num), "%.*s", (int)(len < sizeof(num) ? len : sizeof(num) - 1),
			 (const char *)pos);
		x->run_no = strtoull(num, &end, 10);
		if (*end || end == num) {
			input_error(in, "saved run number '%s' is not a number: counting from 0", num);
			x->run_no = 0;
		}
		xfree(pos);
	} else if (rc != -ENOENT) {
		input_error(in, "cannot read the saved run number: %s", strerror(-rc));
		return rc;
	}
	input_set_connected(in, true, "%s", "");
	fmt_duration(iv, sizeof(iv), c->interval_ms);
	input_set_state(in, "every %s, no run yet", iv);
	loop_timer_every(input_loop(in), &x->tick, loop_next_multiple(loop_now_ms(), c->interval_ms),
			 c->interval_ms);
	return 0;
}

const struct driver exec_driver = {
	.version = DRIVER_VERSION,
	.name = "exec",
	.help = "Runs a command on an interval (no shell unless asked, with a timeout that kills its "
		"whole process group); each line of its standard output is a record.",
	.flags = DRIVER_REPLAY,
	.conf_keys = exec_keys,
	.conf_size = sizeof(struct exec_conf),
	.validate = exec_validate,
	.start = exec_start,
	.resume = exec_resume,
	.stop = exec_stop,
};
