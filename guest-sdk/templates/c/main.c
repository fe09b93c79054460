/*
 * A wharf C vessel template: reads the body from stdin, sets variables, emits a row.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wharf.h"

/* Reads all of stdin into a NUL-terminated heap buffer; *len gets its size. */
static char *read_stdin(size_t *len) {
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap + 1);
    if (!buf) return NULL;
    size_t got;
    while ((got = fread(buf + n, 1, cap - n, stdin)) > 0) {
        n += got;
        if (n == cap) {
            char *bigger = realloc(buf, cap * 2 + 1);
            if (!bigger) { free(buf); return NULL; }
            buf = bigger;
            cap *= 2;
        }
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

/* Asks the host for the request metadata JSON, growing the buffer once if needed. */
static char *request_metadata(void) {
    int32_t need = wharf_request_raw(NULL, 0);
    if (need < 0) return NULL;
    char *buf = malloc((size_t)need + 1);
    if (!buf) return NULL;
    int32_t got = wharf_request_raw(buf, (size_t)need);
    if (got < 0 || got > need) { free(buf); return NULL; }
    buf[got] = '\0';
    return buf;
}

int main(void) {
    size_t len = 0;
    char *body = read_stdin(&len);
    if (!body) {
        fprintf(stderr, "out of memory reading the body\n");
        return 1;
    }

    const char *vessel = getenv("WHARF_VESSEL");
    const char *content_type = getenv("WHARF_CONTENT_TYPE");
    printf("vessel %s got %zu bytes of %s\n", vessel ? vessel : "?", len, content_type ? content_type : "?");

    char *meta = request_metadata();
    if (meta) {
        printf("request: %s\n", meta);
        free(meta);
    }

    char size[32];
    snprintf(size, sizeof size, "%zu", len);
    if (wharf_set_var("received_bytes", size) != WHARF_OK) {
        fprintf(stderr, "set_var refused\n");
        return 1;
    }

    char row[128];
    snprintf(row, sizeof row, "{\"data\":{\"bytes\":%zu},\"operation\":\"added\"}", len);
    if (wharf_emit(row) != WHARF_OK) {
        fprintf(stderr, "emit refused\n");
        return 1;
    }

    free(body);
    return 0;
}
