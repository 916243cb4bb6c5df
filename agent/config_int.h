/* config_int.h - what the parts of the config code share (config.c reads
 * files and sections, config_value.c parses values, config_ref.c prints the
 * reference). Not for drivers or outputs: they see config.h only.
 */
#ifndef AGENT_CONFIG_INT_H
#define AGENT_CONFIG_INT_H

#include <stdbool.h>
#include <stdio.h>

#include "config.h"

/* The key tables of the sections every config has (config.c). */
extern const struct cfg_key config_agent_keys[];
extern const struct cfg_key config_queue_keys[];
extern const struct cfg_key config_input_keys[];
extern const struct cfg_key config_output_keys[];

/* The key of this table called name, or NULL. */
const struct cfg_key *cfg_find_key(const struct cfg_key *keys, const char *name);
/* Is name a plausible misspelling of want? One slip in a short name, two
 * in a longer one (case is ignored). */
bool cfg_close_to(const char *name, const char *want);
/* The key of these tables (b may be NULL) that name most likely meant, or NULL. */
const char *cfg_suggest(const char *name, const struct cfg_key *a, const struct cfg_key *b);
/* Release what one key's member of base owns (see cfg_release()). */
void cfg_release_key(const struct cfg_key *k, void *base);
/* What a value of this type looks like, for messages ("integer", ...). */
const char *cfg_type_hint(enum cfg_type t);

/* The reference of one key table (config_ref.c): a markdown section (its
 * keys, then the columns of each table key), or the keys of a commented
 * example config, skipping the key called skip (NULL: none). */
void cfg_print_section_md(FILE *f, const char *title, const char *intro, const struct cfg_key *keys);
void cfg_print_keys_conf(FILE *f, const struct cfg_key *keys, const char *skip);

#endif
