/*
 * slack-command: a Slack slash command (application/x-www-form-urlencoded on stdin).
 * Sets the variables command, text, user_name and channel_name, and emits one row.
 * Exits 65 (EX_DATAERR) when the body has no `command` field.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wharf.h"

#define EX_DATAERR 65

/* Reads all of stdin into a NUL-terminated heap buffer. */
static char *read_stdin(void) {
    size_t cap = 4096, n = 0, got;
    char *buf = malloc(cap + 1);
    if (!buf) return NULL;
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
    return buf;
}

static int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Decodes a form-urlencoded piece in place (`+` is a space, `%XX` a byte). */
static void form_decode(char *s) {
    char *out = s;
    for (; *s; s++) {
        if (*s == '+') {
            *out++ = ' ';
        } else if (*s == '%' && hex_value(s[1]) >= 0 && hex_value(s[2]) >= 0) {
            *out++ = (char)(hex_value(s[1]) * 16 + hex_value(s[2]));
            s += 2;
        } else {
            *out++ = *s;
        }
    }
    *out = '\0';
}

/* The fields this vessel keeps, decoded; NULL when absent. */
struct command {
    const char *command, *text, *user_name, *channel_name, *trigger_id;
};

/* Splits the body on '&' and '=' in place and picks the known fields. */
static struct command parse_form(char *body) {
    struct command c = {0};
    for (char *pair = strtok(body, "&"); pair; pair = strtok(NULL, "&")) {
        char *eq = strchr(pair, '=');
        char *value = "";
        if (eq) { *eq = '\0'; value = eq + 1; }
        form_decode(pair);
        form_decode(value);
        if (strcmp(pair, "command") == 0) c.command = value;
        else if (strcmp(pair, "text") == 0) c.text = value;
        else if (strcmp(pair, "user_name") == 0) c.user_name = value;
        else if (strcmp(pair, "channel_name") == 0) c.channel_name = value;
        else if (strcmp(pair, "trigger_id") == 0) c.trigger_id = value;
    }
    return c;
}

/* Appends `s` to `out` as a JSON string literal; returns the new end. */
static char *json_string(char *out, const char *s) {
    *out++ = '"';
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') { *out++ = '\\'; *out++ = (char)ch; }
        else if (ch == '\n') { *out++ = '\\'; *out++ = 'n'; }
        else if (ch < 0x20) out += sprintf(out, "\\u%04x", ch);
        else *out++ = (char)ch;
    }
    *out++ = '"';
    *out = '\0';
    return out;
}

static int set(const char *name, const char *value) {
    int32_t status = wharf_set_var(name, value ? value : "");
    if (status != WHARF_OK) fprintf(stderr, "set_var %s refused: %d\n", name, status);
    return status;
}

int main(void) {
    char *body = read_stdin();
    if (!body) { fprintf(stderr, "out of memory\n"); return 1; }

    struct command c = parse_form(body);
    if (!c.command) {
        fprintf(stderr, "no `command` field: not a Slack slash command\n");
        return EX_DATAERR;
    }
    if (set("command", c.command) || set("text", c.text) || set("user_name", c.user_name) ||
        set("channel_name", c.channel_name))
        return 1;

    /* Every field is at most the body's length; escaping at most sextuples it. */
    size_t cap = 6 * strlen(c.command) + 6 * strlen(c.text ? c.text : "") +
                 6 * strlen(c.user_name ? c.user_name : "") + 6 * strlen(c.trigger_id ? c.trigger_id : "") + 128;
    char *row = malloc(cap), *p = row;
    if (!row) { fprintf(stderr, "out of memory\n"); return 1; }
    p += sprintf(p, "{\"data\":{\"command\":");
    p = json_string(p, c.command);
    p += sprintf(p, ",\"text\":");
    p = json_string(p, c.text ? c.text : "");
    p += sprintf(p, ",\"user_name\":");
    p = json_string(p, c.user_name ? c.user_name : "");
    p += sprintf(p, "},\"operation\":\"added\"");
    if (c.trigger_id) {
        p += sprintf(p, ",\"primary_key\":");
        p = json_string(p, c.trigger_id);
    }
    sprintf(p, "}");
    if (wharf_emit(row) != WHARF_OK) { fprintf(stderr, "emit refused\n"); return 1; }

    printf("%s ran %s %s in #%s\n", c.user_name ? c.user_name : "?", c.command, c.text ? c.text : "",
           c.channel_name ? c.channel_name : "?");
    free(row);
    free(body);
    return 0;
}
