/* config.h - the configuration: one declarative table of keys per section.
 *
 * File format (the same for local files and pushed configs):
 *
 *     # comment
 *     [agent]
 *     id = gw-01
 *     [input sensors]        # section kind, then instance name
 *     driver = tail
 *     path = /var/log/sensors/sensor-?.log (globs allowed)
 *     [output lake]
 *     type = mqtt
 *
 * Each section kind has a table of struct cfg_key; inputs additionally accept
 * their driver's keys and outputs their type's keys. The same tables validate
 * the file, print the reference (docs/configuration.md) and the commented
 * example, so they cannot drift apart.
 */
#ifndef AGENT_CONFIG_H
#define AGENT_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

enum cfg_type {
	CFG_STR,      /* char *, xstrdup'ed; NULL when default is NULL */
	CFG_INT,      /* int64_t, decimal */
	CFG_SIZE,     /* int64_t bytes; suffixes k, M, G (1024-based), KiB, MiB, GiB */
	CFG_DURATION, /* int64_t milliseconds; suffixes ms, s, m, h (bare = ms) */
	CFG_BOOL,     /* bool; true/false, yes/no, on/off, 1/0 */
	CFG_ENUM,     /* int, index into enums[] */
	CFG_LIST,     /* struct cfg_list; the key may be given on several lines */
	CFG_TABLE,    /* struct cfg_table; one row per line the key is given on */
};

/* CFG_LIST: every value of a key that may be given on several lines; each line's value is also
 * split at commas, items trimmed, empty items refused. Default `def` is parsed the same way.
 * A section that gives the key replaces the default. */
struct cfg_list { char **v; size_t n; };

/* CFG_TABLE: one row per line the key is given on, in file order. A row is words `col=value`
 * separated by blanks; a value may be double-quoted to hold blanks or '#'. Each row is a struct of
 * key->row_size bytes filled from key->cols' defaults and then from its words, with the same types,
 * bounds, enums and messages as section keys ("FILE:LINE: key 'register': column 'type': 'float33'
 * is not one of ..."; an unknown column names the one probably meant; a required column must be
 * given). Row structs are released with cfg_release(key->cols, row). Columns are of any type but
 * CFG_TABLE, at most 64 of them; a table's `def`, if not NULL, is its one default row. */
struct cfg_table { void *rows; size_t n; };
#define CFG_ROW(tab, type, i) (&((type *)(tab)->rows)[i])

struct cfg_key {
	const char *name;
	enum cfg_type type;
	const char *def;       /* default as text; NULL = unset (CFG_STR: NULL, CFG_LIST:
	                        * no items, CFG_TABLE: no rows; no other type) */
	size_t offset;         /* into the section's struct */
	const char *help;      /* one or two sentences for the field engineer */
	const char *const *enums; /* CFG_ENUM: NULL-terminated names */
	int64_t min, max;      /* CFG_INT/SIZE/DURATION bounds; both 0 = unbounded */
	bool required;
	const char *example;   /* value shown in the example config, if not def */
	const struct cfg_key *cols;  /* CFG_TABLE: the columns, {NULL}-terminated */
	size_t row_size;             /* CFG_TABLE: sizeof the row struct */
};

enum on_full { ON_FULL_DROP_OLDEST, ON_FULL_BLOCK };
enum sync_level { SYNC_OFF, SYNC_NORMAL, SYNC_FULL };
enum parser_kind { PARSER_RAW, PARSER_JSON, PARSER_CSV, PARSER_NMEA, PARSER_INFLUX };

struct agent_conf {
	char *id;
	char *state_dir;
	char *control_socket;   /* default <state_dir>/agentd.sock */
	int log_level;
	bool trust_clock;
};

struct queue_conf {
	int64_t max_bytes;
	int on_full;            /* enum on_full */
	int64_t commit_interval_ms;
	int64_t commit_records;
	int synchronous;        /* enum sync_level */
	int64_t max_record_bytes;
	int64_t dedupe_window;  /* records whose keys are remembered */
};

struct input_conf {
	char *name;
	char *driver;
	char *stream;           /* default: the input's name */
	int parser;             /* enum parser_kind */
	int64_t max_record_bytes; /* 0 = queue.max_record_bytes */
	void *drv;              /* the driver's own struct, sized by driver->conf_size */
	const struct driver *drv_type;
	struct input_conf *next;
};

struct output_conf {
	char *name;
	char *type;
	char *streams;          /* comma-separated glob patterns of stream names routed here */
	int64_t batch_max_records;
	int64_t batch_max_bytes;
	int64_t linger_ms;
	int64_t max_inflight;
	int64_t retry_base_ms;
	int64_t retry_max_ms;
	int64_t retry_probe_ms;    /* connect check while backed off; 0 none */
	int64_t compression_level;
	void *typ;              /* the output type's own struct, sized by type->conf_size */
	const struct output_type *out_type;
	struct output_conf *next;
};

struct config {
	char *path;
	char hash[65];          /* SHA-256 of the file's bytes, hex */
	struct agent_conf agent;
	struct queue_conf queue;
	struct input_conf *inputs;
	struct output_conf *outputs;
	size_t n_inputs, n_outputs;
};

/* Load and strictly validate a config file. Returns 0, or:
 *   -EINVAL  the file is invalid; err says "FILE:LINE: key 'k': problem"
 *            (an unknown key names the one probably meant)
 *   -ENOMEM  memory ran short: nothing is known about the file, and err
 *            says "FILE: out of memory: ..." (never that it is invalid)
 *   -errno   it cannot be read (-ENOENT, -EACCES, -EFBIG, ...) */
int config_load(const char *path, struct config **out, char *err, size_t errlen);
/* The config file agentd and agentctl use without -c: $AGENTD_CONFIG when
 * set and not empty, else CONFIG_DEFAULT_PATH. */
#define CONFIG_DEFAULT_PATH "/etc/agentd/agentd.conf"
const char *config_default_path(void);
/* Same, from text in memory; `name` is used in messages. */
int config_parse(const char *text, size_t len, const char *name,
		 struct config **out, char *err, size_t errlen);
void config_free(struct config *c);

/* Read only the [agent] section of a file that may be invalid elsewhere,
 * so agentctl finds the state of an agentd still running on an older,
 * valid version of the file. Unset or bad keys keep their defaults.
 * Returns 0 or -errno; release with config_agent_release(). */
int config_peek_agent(const char *path, struct agent_conf *ac);
void config_agent_release(struct agent_conf *ac);

/* Fill a zeroed struct from a key table's defaults (used for sections and
 * tests). Returns 0, -ENOMEM, or -EINVAL when a built-in default is invalid
 * (logged). */
int cfg_defaults(const struct cfg_key *keys, void *base);
/* Parse one value into base per its key: a CFG_LIST gets the value's items
 * appended, a CFG_TABLE one row appended (value is the row's words); other
 * types are replaced. Returns 0, -ENOMEM, or -EINVAL with err set ("'x' is
 * too large: the maximum is 64MiB", "column 'type': ...", ...); on an error
 * base is as it was. */
int cfg_set(const struct cfg_key *key, void *base, const char *value,
	    char *err, size_t errlen);
/* Free what a struct described by keys owns: CFG_STR members, every list
 * item, every table row's members (through the key's cols) and the arrays.
 * Freed members are left NULL/empty. Accepts a NULL base. */
void cfg_release(const struct cfg_key *keys, void *base);

/* Parse the key = value lines of one section body (no [header]) into base
 * against one key table, by the same code config_parse uses for every
 * section: a zeroed base gets the defaults first, then each line; keys
 * other than CFG_LIST and CFG_TABLE at most once; required keys; unknown
 * keys named with the one probably meant. `name` opens messages ("NAME:LINE: key 'k': ..."). Used by
 * the tests, and by drivers' own unit tests for their key tables. Returns 0,
 * -EINVAL with err set, or -ENOMEM ("NAME: out of memory: ..."); on an error
 * base is released (cfg_release), so nothing needs freeing. */
int cfg_parse_section(const struct cfg_key *keys, void *base, const char *text,
		      const char *name, char *err, size_t errlen);

/* Print the reference of every section and key: markdown (docs) or a
 * commented example config. */
void config_print_reference(FILE *f, bool markdown);

#endif
