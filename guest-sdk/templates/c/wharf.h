/*
 * wharf.h — the wharf host imports for C vessels (WASI preview-1 commands).
 *
 * A vessel reads the webhook body from stdin, its variables and WHARF_* ids from the
 * environment (getenv), logs to stdout/stderr, and ends with its exit status. These imports,
 * from the module "wharf", let it set variables, emit rows and read the request metadata.
 *
 * Build: clang --target=wasm32-wasi -O2 -o vessel.wasm main.c
 */
#ifndef WHARF_H
#define WHARF_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define WHARF_IMPORT(name) __attribute__((import_module("wharf"), import_name(name)))

/* Results of the imports: 0 ok, -1 invalid argument, -2 a limit was reached. */
#define WHARF_OK 0
#define WHARF_INVALID (-1)
#define WHARF_LIMIT (-2)

/*
 * Sets a variable for this run (visible to later vessels). The name matches
 * [A-Za-z_][A-Za-z0-9_]* and is at most 128 bytes; the value is UTF-8.
 */
WHARF_IMPORT("set_var")
int32_t wharf_set_var_raw(const char *name, size_t name_len, const char *value, size_t value_len);

/*
 * Emits one row as JSON: {"data":{...},"operation":"added","primary_key":"..."} (operation and
 * primary_key optional), or a bare JSON object taken as the data.
 */
WHARF_IMPORT("emit")
int32_t wharf_emit_raw(const char *json, size_t json_len);

/*
 * Writes the request metadata JSON {"id","method","content_type","headers","query"} into buf
 * and returns its length. If buf_len is smaller than that, nothing is written and the needed
 * length is returned: call again with a buffer that big. Negative means an error.
 */
WHARF_IMPORT("request")
int32_t wharf_request_raw(char *buf, size_t buf_len);

/* Convenience wrappers for NUL-terminated strings. */
static inline int32_t wharf_set_var(const char *name, const char *value) {
    return wharf_set_var_raw(name, strlen(name), value, strlen(value));
}

static inline int32_t wharf_emit(const char *json) {
    return wharf_emit_raw(json, strlen(json));
}

#endif /* WHARF_H */
