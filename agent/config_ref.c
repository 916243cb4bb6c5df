/* config_ref.c - the reference of every section and key, printed from the
 * key tables: markdown for docs/configuration.md and a commented example
 * config for conf/agentd.conf (make docs writes both).
 */
#include <stdio.h>
#include <string.h>

#include "config.h"
#include "config_int.h"
#include "driver.h"
#include "output.h"

/* Help text as comment lines of at most 76 columns: the first line opens
 * with lead, the others with cont. */
static void print_wrapped(FILE *f, const char *lead, const char *cont, const char *h)
{
	const char *pre = lead;

	while (*h) {
		int width = 76 - (int)strlen(pre), n = 0, last = 0;

		while (n < width && h[n]) {
			if (h[n] == ' ')
				last = n;
			n++;
		}
		if (h[n] && last)
			n = last;
		fprintf(f, "%s%.*s\n", pre, n, h);
		h += n;
		while (*h == ' ')
			h++;
		pre = cont;
	}
}

static void print_comment(FILE *f, const char *h)
{
	print_wrapped(f, "# ", "# ", h);
}

static const char *type_name(const struct cfg_key *k)
{
	switch (k->type) {
	case CFG_SIZE: return "size";
	case CFG_DURATION: return "duration";
	case CFG_ENUM: return "enum";
	case CFG_LIST: return "list (comma-separated; the key may be given on several lines)";
	case CFG_TABLE: return "table (one row per line the key is given on; columns below)";
	default: return cfg_type_hint(k->type);
	}
}

static const char *default_text(const struct cfg_key *k)
{
	if (k->required)
		return "**required**";
	if (k->def)
		return *k->def ? k->def : "`\"\"`";
	if (k->type == CFG_LIST)
		return "(none)";
	if (k->type == CFG_TABLE)
		return "(no rows)";
	return "(see text)";
}

/* A row of a table as the file would hold it: the key's example, else every
 * required column and every column with an example, with its example or
 * default. A value with a blank or '#' is quoted. */
static void print_row_example(FILE *f, const struct cfg_key *k)
{
	bool first = true;

	if (k->example) {
		fputs(k->example, f);
		return;
	}
	for (const struct cfg_key *c = k->cols; c->name; c++) {
		const char *v = c->example ? c->example : c->def;

		if (!v || (!c->required && !c->example))
			continue;
		fprintf(f, strpbrk(v, " \t#") || !*v ? "%s%s=\"%s\"" : "%s%s=%s", first ? "" : " ", c->name, v);
		first = false;
	}
}

static void print_md_row(FILE *f, const struct cfg_key *k)
{
	fprintf(f, "| `%s` | %s", k->name, type_name(k));
	if (k->type == CFG_ENUM) {
		fprintf(f, ": ");
		for (int i = 0; k->enums[i]; i++)
			fprintf(f, "%s`%s`", i ? ", " : "", k->enums[i]);
	}
	fprintf(f, " | %s | %s |\n", default_text(k), k->help);
}

/* The columns of a table key, under the section's own table. */
static void print_md_columns(FILE *f, const struct cfg_key *k)
{
	fprintf(f, "\nColumns of `%s`: each line `%s = column=value column=value ...`, a value in double "
		   "quotes when it holds blanks or '#', e.g.\n\n    %s = ", k->name, k->name, k->name);
	print_row_example(f, k);
	fprintf(f, "\n\n| column | type | default | meaning |\n| --- | --- | --- | --- |\n");
	for (const struct cfg_key *c = k->cols; c->name; c++)
		print_md_row(f, c);
}

/* One key of the example config: its help, then the key, commented out
 * unless it must be set. */
static void print_conf_key(FILE *f, const struct cfg_key *k)
{
	const char *v = k->def ? k->def : k->example ? k->example : "";

	fprintf(f, "\n");
	print_comment(f, k->help);
	if (k->type == CFG_LIST)
		print_comment(f, "Items are separated by commas; the key may be given on several lines.");
	if (k->type != CFG_TABLE) {
		fprintf(f, "%s%s = %s\n", k->required ? "" : "#", k->name,
			k->required ? (k->example ? k->example : "") : v);
		return;
	}
	print_comment(f, "One row per line, words column=value (a value in double quotes when it holds "
		      "blanks or '#'). Columns:");
	for (const struct cfg_key *c = k->cols; c->name; c++) {
		char lead[80], text[1024];
		size_t n;

		snprintf(lead, sizeof(lead), "#   %s: ", c->name);
		n = (size_t)snprintf(text, sizeof(text), "%s", cfg_type_hint(c->type));
		for (int i = 0; c->type == CFG_ENUM && c->enums[i] && n < sizeof(text); i++)
			n += (size_t)snprintf(text + n, sizeof(text) - n, "%s %s", i ? "," : "", c->enums[i]);
		if (n >= sizeof(text))
			n = sizeof(text) - 1;
		if (c->required)
			snprintf(text + n, sizeof(text) - n, ", required. %s", c->help);
		else if (c->def)
			snprintf(text + n, sizeof(text) - n, ", default %s. %s", *c->def ? c->def : "\"\"",
				 c->help);
		else
			snprintf(text + n, sizeof(text) - n, ". %s", c->help);
		print_wrapped(f, lead, "#       ", text);
	}
	fprintf(f, "%s%s = ", k->required ? "" : "#", k->name);
	print_row_example(f, k);
	fprintf(f, "\n");
}

void cfg_print_keys_conf(FILE *f, const struct cfg_key *keys, const char *skip)
{
	for (const struct cfg_key *k = keys; k && k->name; k++)
		if (!skip || strcmp(k->name, skip))
			print_conf_key(f, k);
}

void cfg_print_section_md(FILE *f, const char *title, const char *intro, const struct cfg_key *keys)
{
	fprintf(f, "\n### %s\n\n%s\n\n| key | type | default | meaning |\n| --- | --- | --- | --- |\n",
		title, intro);
	for (const struct cfg_key *k = keys; k && k->name; k++)
		print_md_row(f, k);
	for (const struct cfg_key *k = keys; k && k->name; k++)
		if (k->type == CFG_TABLE)
			print_md_columns(f, k);
}

static void print_markdown(FILE *f)
{
	char title[96];

	cfg_print_section_md(f, "[agent]", "Who this agent is and where it keeps its state.", config_agent_keys);
	cfg_print_section_md(f, "[queue]", "The durable on-disk queue every accepted record is kept in.", config_queue_keys);
	cfg_print_section_md(f, "[input NAME]", "Keys every input has, whatever its driver.", config_input_keys);
	for (int i = 0; driver_registry[i]; i++) {
		const struct driver *d = driver_registry[i];
		char intro[1024];

		snprintf(title, sizeof(title), "driver = %s", d->name);
		if (d->flags & DRIVER_STRUCTURED)
			snprintf(intro, sizeof(intro), "%s Its records are structured: it takes no `parser`.",
				 d->help);
		else if (d->parser)
			snprintf(intro, sizeof(intro), "%s Its `parser` defaults to `%s`.", d->help, d->parser);
		else
			snprintf(intro, sizeof(intro), "%s", d->help);
		cfg_print_section_md(f, title, intro, d->conf_keys);
	}
	cfg_print_section_md(f, "[output NAME]", "Keys every output has, whatever its type.", config_output_keys);
	for (int i = 0; output_types[i]; i++) {
		snprintf(title, sizeof(title), "type = %s", output_types[i]->name);
		cfg_print_section_md(f, title, output_types[i]->help, output_types[i]->conf_keys);
	}
}

/* A loadable example: every key with its help, defaults commented out,
 * one input of the first driver and one output of the first type. */
static void print_example(FILE *f)
{
	const struct driver *d = driver_registry[0];
	const struct output_type *t = output_types[0];

	fprintf(f, "# agentd configuration: every key, with its default commented out.\n"
		   "# Sizes take KiB/MiB/GiB, durations ms/s/m/h, booleans true/false,\n"
		   "# yes/no or on/off. Validate with\n"
		   "#   agentd --check-config FILE\n\n[agent]\n");
	cfg_print_keys_conf(f, config_agent_keys, NULL);
	fprintf(f, "\n[queue]\n");
	cfg_print_keys_conf(f, config_queue_keys, NULL);
	fprintf(f, "\n# One section per input; NAME is the default stream name.\n[input sensors]\n");
	print_comment(f, config_input_keys[0].help);
	fprintf(f, "driver = %s\n", d->name);
	cfg_print_keys_conf(f, config_input_keys, "driver");
	fprintf(f, "\n# Keys of driver = %s: %s\n", d->name, d->help);
	cfg_print_keys_conf(f, d->conf_keys, NULL);
	fprintf(f, "\n# One section per output.\n[output lake]\n");
	print_comment(f, config_output_keys[0].help);
	fprintf(f, "type = %s\n", t->name);
	cfg_print_keys_conf(f, config_output_keys, "type");
	fprintf(f, "\n# Keys of type = %s: %s\n", t->name, t->help);
	cfg_print_keys_conf(f, t->conf_keys, NULL);
}

void config_print_reference(FILE *f, bool md)
{
	if (md)
		print_markdown(f);
	else
		print_example(f);
}

