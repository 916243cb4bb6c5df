/* agent-decode - read what the lake receives from agentd.
 *
 *   agent-decode [FILE...]
 *       Decompress batch bodies (zstd frames of NDJSON) from files or
 *       standard input and print the records, one JSON object per line.
 *   agent-decode --sub HOST:PORT TOPIC [--meta] [--id CLIENT_ID]
 *                [--count N] [--idle SECONDS]
 *       Subscribe to TOPIC (wildcards allowed) with MQTT v5 at QoS 1 and
 *       print the records of every batch that arrives. --meta prints one
 *       {"batch":{...}} line with the batch's user properties before its
 *       records. --id keeps a persistent session under that client id, so
 *       batches published while this program is away are delivered later.
 *       Stops after N records or after SECONDS without a message.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <mosquitto.h>
#include <mqtt_protocol.h>
#include <zstd.h>

struct sub {
	const char *topic;
	bool meta;
	long count, want;
	time_t last;
	int failed;
};

static int decode(const void *src, size_t len, FILE *out)
{
	ZSTD_DCtx *d = ZSTD_createDCtx();
	ZSTD_inBuffer in = { src, len, 0 };
	char buf[1 << 16];
	int rc = 0;

	if (!d)
		return -ENOMEM;
	while (in.pos < in.size) {
		ZSTD_outBuffer o = { buf, sizeof(buf), 0 };
		size_t r = ZSTD_decompressStream(d, &o, &in);

		if (ZSTD_isError(r)) {
			fprintf(stderr, "agent-decode: not a valid zstd batch: %s\n", ZSTD_getErrorName(r));
			rc = -EINVAL;
			break;
		}
		fwrite(buf, 1, o.pos, out);
		if (r == 0 && in.pos == in.size)
			break;
		if (o.pos == 0 && r != 0 && in.pos == in.size) {
			fprintf(stderr, "agent-decode: truncated zstd frame\n");
			rc = -EINVAL;
			break;
		}
	}
	ZSTD_freeDCtx(d);
	return rc;
}

static int decode_file(FILE *f)
{
	size_t cap = 1 << 16, len = 0, n;
	char *p = malloc(cap);
	int rc;

	if (!p)
		return -ENOMEM;
	while ((n = fread(p + len, 1, cap - len, f)) > 0) {
		len += n;
		if (len == cap) {
			char *q = realloc(p, cap * 2);

			if (!q) {
				free(p);
				return -ENOMEM;
			}
			p = q;
			cap *= 2;
		}
	}
	rc = decode(p, len, stdout);
	free(p);
	return rc;
}

static void on_message(struct mosquitto *m, void *arg, const struct mosquitto_message *msg,
		       const mosquitto_property *props)
{
	struct sub *s = arg;
	const mosquitto_property *p;
	char *name, *value;

	s->last = time(NULL);
	if (s->meta) {
		printf("{\"batch\":{\"topic\":\"%s\",\"bytes\":%d", msg->topic, msg->payloadlen);
		for (p = props; p; p = mosquitto_property_next(p)) {
			if (mosquitto_property_identifier(p) != MQTT_PROP_USER_PROPERTY)
				continue;
			if (mosquitto_property_read_string_pair(p, MQTT_PROP_USER_PROPERTY, &name, &value,
								false)) {
				printf(",\"%s\":\"%s\"", name, value);
				free(name);
				free(value);
			}
		}
		printf("}}\n");
	}
	if (decode(msg->payload, (size_t)msg->payloadlen, stdout))
		s->failed++;
	fflush(stdout);
	/* --count counts records by the batch's own count property. */
	for (p = props; p; p = mosquitto_property_next(p)) {
		if (mosquitto_property_read_string_pair(p, MQTT_PROP_USER_PROPERTY, &name, &value, false)) {
			if (!strcmp(name, "count"))
				s->count += atol(value);
			free(name);
			free(value);
		}
	}
}

/* Subscribe on every connect, so a reconnect without a kept session
 * still receives. */
static void on_connect(struct mosquitto *m, void *arg, int rc, int flags,
		       const mosquitto_property *props)
{
	struct sub *s = arg;

	if (rc) {
		fprintf(stderr, "agent-decode: broker refused the connection: %s\n",
			mosquitto_reason_string(rc));
		return;
	}
	if (mosquitto_subscribe_v5(m, NULL, s->topic, 1, 0, NULL))
		fprintf(stderr, "agent-decode: subscribe to %s failed\n", s->topic);
	else
		fprintf(stderr, "agent-decode: subscribed to %s\n", s->topic);
}

static int subscribe(const char *hostport, const char *topic, struct sub *s, const char *id,
		     long idle)
{
	char host[256];
	const char *colon = strrchr(hostport, ':');
	mosquitto_property *cprops = NULL;
	struct mosquitto *m;
	int port, rc;

	if (!colon || (size_t)(colon - hostport) >= sizeof(host)) {
		fprintf(stderr, "agent-decode: --sub wants HOST:PORT\n");
		return 2;
	}
	memcpy(host, hostport, (size_t)(colon - hostport));
	host[colon - hostport] = '\0';
	port = atoi(colon + 1);
	mosquitto_lib_init();
	m = mosquitto_new(id, id == NULL, s);
	if (!m)
		return 1;
	mosquitto_int_option(m, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5);
	mosquitto_message_v5_callback_set(m, on_message);
	mosquitto_connect_v5_callback_set(m, on_connect);
	if (id)
		mosquitto_property_add_int32(&cprops, MQTT_PROP_SESSION_EXPIRY_INTERVAL, 3600);
	rc = mosquitto_connect_bind_v5(m, host, port, 30, NULL, cprops);
	mosquitto_property_free_all(&cprops);
	if (rc) {
		fprintf(stderr, "agent-decode: cannot connect to %s: %s\n", hostport, mosquitto_strerror(rc));
		mosquitto_destroy(m);
		return 1;
	}
	fprintf(stderr, "agent-decode: connected to %s\n", hostport);
	s->last = time(NULL);
	while (!(s->want && s->count >= s->want) && time(NULL) - s->last < idle) {
		rc = mosquitto_loop(m, 100, 1);
		if (rc) {
			/* Lost the broker: try again every 200 ms; the connect
			 * callback subscribes again. */
			usleep(200000);
			mosquitto_reconnect(m);
		}
	}
	mosquitto_disconnect(m);
	mosquitto_destroy(m);
	mosquitto_lib_cleanup();
	return s->failed ? 1 : 0;
}

int main(int argc, char **argv)
{
	struct sub s = { 0 };
	const char *hostport = NULL, *topic = NULL, *id = NULL;
	long idle = 3600;
	int first_file = 0, rc = 0;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--sub") && i + 2 < argc) {
			hostport = argv[++i];
			topic = argv[++i];
		} else if (!strcmp(argv[i], "--meta")) {
			s.meta = true;
		} else if (!strcmp(argv[i], "--id") && i + 1 < argc) {
			id = argv[++i];
		} else if (!strcmp(argv[i], "--count") && i + 1 < argc) {
			s.want = atol(argv[++i]);
		} else if (!strcmp(argv[i], "--idle") && i + 1 < argc) {
			idle = atol(argv[++i]);
		} else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
			printf("usage: agent-decode [FILE...]\n"
			       "       agent-decode --sub HOST:PORT TOPIC [--meta] [--id ID] [--count N] [--idle S]\n");
			return 0;
		} else if (argv[i][0] == '-' && argv[i][1]) {
			fprintf(stderr, "agent-decode: unknown option %s\n", argv[i]);
			return 2;
		} else if (!first_file) {
			first_file = i;
		}
	}
	s.topic = topic;
	if (hostport)
		return subscribe(hostport, topic, &s, id, idle);
	if (!first_file)
		return decode_file(stdin) ? 1 : 0;
	for (int i = first_file; i < argc; i++) {
		FILE *f;

		if (argv[i][0] == '-')
			continue;
		f = fopen(argv[i], "rb");
		if (!f) {
			fprintf(stderr, "agent-decode: %s: %s\n", argv[i], strerror(errno));
			rc = 1;
			continue;
		}
		if (decode_file(f))
			rc = 1;
		fclose(f);
	}
	return rc;
}
