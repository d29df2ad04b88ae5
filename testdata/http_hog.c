// A hostile wasi:http/proxy guest for tests/all/serve_attacks.rs: it makes the host hold
// memory that is not its own linear memory. Routes:
//   GET /fields?n=N   makes N header maps of about 60 KiB each in the host (fields.from-list),
//                     holding them all, answers 200 "made K" (K: the maps made)
//   POST /fields?n=N  the same, then says "guest holds fields" on stderr and holds them until
//                     the first byte of the request body comes
//   GET /flood        answers 200 and writes its body in 1 MiB pieces for as long as the
//                     host takes them; once it has taken none for half a second (the
//                     client reads nothing), finishes the body and returns, leaving what
//                     it wrote to the host
//   GET /random?mb=N  asks the host for N MiB of random bytes (one get-random-bytes call),
//                     answers 200 with how many came; traps when they do not fit its memory
//   GET /unfinished   answers 200 (chunked), writes "partial" and returns without finishing
//                     its body (nor dropping it)
//   GET /unfinished?length=N  the same with content-length: N
//   GET /unfinished?drop      the same (chunked), dropping its body unfinished before returning
//   GET /methods?n=N  makes N outgoing requests (none sent), each given a 1 MiB method name
//                     (set-method, other), holding them all; answers 200 "set K"
//   GET /bodies?n=N   makes N outgoing responses (never set) and writes into each one's body
//                     as much as the host takes at once, 1 MiB a write, holding them all;
//                     answers 200 "wrote K" (K: the bytes the host took)
//   anything else     404
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy.h"

static proxy_string_t str(const char *s) {
    return (proxy_string_t){(uint8_t *)s, strlen(s)};
}

static void respond_text(wasi_http_types_own_response_outparam_t out, int status, const char *text) {
    wasi_http_types_own_fields_t fields = wasi_http_types_constructor_fields();
    wasi_http_types_own_outgoing_response_t response = wasi_http_types_constructor_outgoing_response(fields);
    wasi_http_types_borrow_outgoing_response_t r = wasi_http_types_borrow_outgoing_response(response);
    wasi_http_types_method_outgoing_response_set_status_code(r, status);
    wasi_http_types_own_outgoing_body_t body;
    wasi_http_types_method_outgoing_response_body(r, &body);
    wasi_http_types_result_own_outgoing_response_error_code_t result = {.is_err = false};
    result.val.ok = response;
    wasi_http_types_static_response_outparam_set(out, &result);
    wasi_http_types_own_output_stream_t stream;
    wasi_http_types_method_outgoing_body_write(wasi_http_types_borrow_outgoing_body(body), &stream);
    proxy_list_u8_t chunk = {(uint8_t *)text, strlen(text)};
    wasi_io_streams_stream_error_t err;
    wasi_io_streams_method_output_stream_blocking_write_and_flush(wasi_io_streams_borrow_output_stream(stream),
                                                                  &chunk, &err);
    wasi_io_streams_output_stream_drop_own(stream);
    wasi_http_types_error_code_t error;
    wasi_http_types_static_outgoing_body_finish(body, NULL, &error);
}

static uint8_t value[1000];
static uint8_t piece[1 << 20];

// Whether `stream` takes more bytes within half a second.
static bool writable_soon(wasi_io_streams_borrow_output_stream_t stream) {
    wasi_io_poll_own_pollable_t ready = wasi_io_streams_method_output_stream_subscribe(stream);
    wasi_io_poll_own_pollable_t timer = wasi_clocks_monotonic_clock_subscribe_duration(500000000ull);
    wasi_io_poll_borrow_pollable_t both[2] = {wasi_io_poll_borrow_pollable(ready),
                                              wasi_io_poll_borrow_pollable(timer)};
    wasi_io_poll_list_borrow_pollable_t list = {both, 2};
    proxy_list_u32_t which;
    wasi_io_poll_poll(&list, &which);
    bool writable = false;
    for (size_t i = 0; i < which.len; i++) {
        if (which.ptr[i] == 0) writable = true;
    }
    proxy_list_u32_free(&which);
    wasi_io_poll_pollable_drop_own(ready);
    wasi_io_poll_pollable_drop_own(timer);
    return writable;
}

static void flood(wasi_http_types_own_response_outparam_t out) {
    wasi_http_types_own_fields_t fields = wasi_http_types_constructor_fields();
    wasi_http_types_own_outgoing_response_t response = wasi_http_types_constructor_outgoing_response(fields);
    wasi_http_types_borrow_outgoing_response_t r = wasi_http_types_borrow_outgoing_response(response);
    wasi_http_types_own_outgoing_body_t body;
    wasi_http_types_method_outgoing_response_body(r, &body);
    wasi_http_types_result_own_outgoing_response_error_code_t result = {.is_err = false};
    result.val.ok = response;
    wasi_http_types_static_response_outparam_set(out, &result);
    wasi_http_types_own_output_stream_t stream;
    wasi_http_types_method_outgoing_body_write(wasi_http_types_borrow_outgoing_body(body), &stream);
    wasi_io_streams_borrow_output_stream_t s = wasi_io_streams_borrow_output_stream(stream);
    memset(piece, 'f', sizeof piece);
    for (;;) {
        uint64_t n;
        wasi_io_streams_stream_error_t err;
        if (!wasi_io_streams_method_output_stream_check_write(s, &n, &err)) break;
        if (n == 0) {
            if (!writable_soon(s)) break;
            continue;
        }
        proxy_list_u8_t chunk = {piece, n < sizeof piece ? n : sizeof piece};
        if (!wasi_io_streams_method_output_stream_write(s, &chunk, &err)) break;
    }
    wasi_io_streams_output_stream_drop_own(stream);
    wasi_http_types_error_code_t error;
    wasi_http_types_static_outgoing_body_finish(body, NULL, &error);
}

// Writes part of a response and leaves its body unfinished: held when `drop` is false.
static void unfinished(wasi_http_types_own_response_outparam_t out, const char *length, bool drop) {
    wasi_http_types_own_fields_t fields = wasi_http_types_constructor_fields();
    if (length) {
        wasi_http_types_field_name_t name = str("content-length");
        wasi_http_types_field_value_t value = {(uint8_t *)length, strlen(length)};
        wasi_http_types_header_error_t err;
        wasi_http_types_method_fields_append(wasi_http_types_borrow_fields(fields), &name, &value, &err);
    }
    wasi_http_types_own_outgoing_response_t response = wasi_http_types_constructor_outgoing_response(fields);
    wasi_http_types_borrow_outgoing_response_t r = wasi_http_types_borrow_outgoing_response(response);
    wasi_http_types_own_outgoing_body_t body;
    wasi_http_types_method_outgoing_response_body(r, &body);
    wasi_http_types_result_own_outgoing_response_error_code_t result = {.is_err = false};
    result.val.ok = response;
    wasi_http_types_static_response_outparam_set(out, &result);
    wasi_http_types_own_output_stream_t stream;
    wasi_http_types_method_outgoing_body_write(wasi_http_types_borrow_outgoing_body(body), &stream);
    proxy_list_u8_t chunk = {(uint8_t *)"partial", 7};
    wasi_io_streams_stream_error_t err;
    wasi_io_streams_method_output_stream_blocking_write_and_flush(wasi_io_streams_borrow_output_stream(stream),
                                                                  &chunk, &err);
    wasi_io_streams_output_stream_drop_own(stream);
    if (drop) wasi_http_types_outgoing_body_drop_own(body);
}

// One buffer the guest reuses for every method name: what the host keeps is its copies.
static char long_method[1 << 20];

// Requests that are never sent, each holding a copy of a 1 MiB method name in the host.
static void methods(wasi_http_types_own_response_outparam_t out, size_t n) {
    memset(long_method, 'M', sizeof long_method);
    size_t set = 0;
    for (; set < n; set++) {
        if (set + 16 >= 2048) break;
        wasi_http_types_own_fields_t fields = wasi_http_types_constructor_fields();
        wasi_http_types_own_outgoing_request_t request = wasi_http_types_constructor_outgoing_request(fields);
        wasi_http_types_method_t method = {.tag = WASI_HTTP_TYPES_METHOD_OTHER};
        method.val.other = (proxy_string_t){(uint8_t *)long_method, sizeof long_method};
        if (!wasi_http_types_method_outgoing_request_set_method(wasi_http_types_borrow_outgoing_request(request),
                                                                &method))
            break;
    }
    char text[64];
    snprintf(text, sizeof text, "set %zu\n", set);
    respond_text(out, 200, text);
}

// Responses never sent, each with what the host took into its body's buffer.
static void bodies(wasi_http_types_own_response_outparam_t out, size_t n) {
    memset(long_method, 'b', sizeof long_method);
    size_t wrote = 0;
    for (size_t i = 0; i < n && i * 4 + 16 < 4096; i++) {
        wasi_http_types_own_fields_t fields = wasi_http_types_constructor_fields();
        wasi_http_types_own_outgoing_response_t response = wasi_http_types_constructor_outgoing_response(fields);
        wasi_http_types_own_outgoing_body_t body;
        if (!wasi_http_types_method_outgoing_response_body(wasi_http_types_borrow_outgoing_response(response), &body))
            break;
        wasi_http_types_own_output_stream_t stream;
        if (!wasi_http_types_method_outgoing_body_write(wasi_http_types_borrow_outgoing_body(body), &stream)) break;
        wasi_io_streams_borrow_output_stream_t s = wasi_io_streams_borrow_output_stream(stream);
        for (;;) {
            uint64_t room;
            wasi_io_streams_stream_error_t err;
            if (!wasi_io_streams_method_output_stream_check_write(s, &room, &err) || room == 0) break;
            proxy_list_u8_t chunk = {(uint8_t *)long_method, room < sizeof long_method ? room : sizeof long_method};
            if (!wasi_io_streams_method_output_stream_write(s, &chunk, &err)) break;
            wrote += chunk.len;
        }
    }
    char text[64];
    snprintf(text, sizeof text, "wrote %zu\n", wrote);
    respond_text(out, 200, text);
}

void exports_wasi_http_incoming_handler_handle(exports_wasi_http_incoming_handler_own_incoming_request_t request,
                                               exports_wasi_http_incoming_handler_own_response_outparam_t out) {
    wasi_http_types_borrow_incoming_request_t req = wasi_http_types_borrow_incoming_request(request);
    proxy_string_t path_with_query;
    char path[256] = "/";
    if (wasi_http_types_method_incoming_request_path_with_query(req, &path_with_query)) {
        size_t n = path_with_query.len < sizeof path - 1 ? path_with_query.len : sizeof path - 1;
        memcpy(path, path_with_query.ptr, n);
        path[n] = 0;
    }
    if (strcmp(path, "/flood") == 0) {
        flood(out);
        return;
    }
    if (strncmp(path, "/unfinished", 11) == 0) {
        const char *length = strncmp(path + 11, "?length=", 8) == 0 ? path + 19 : NULL;
        unfinished(out, length, strcmp(path + 11, "?drop") == 0);
        return;
    }
    if (strncmp(path, "/methods?n=", 11) == 0) {
        methods(out, strtoull(path + 11, NULL, 10));
        return;
    }
    if (strncmp(path, "/bodies?n=", 10) == 0) {
        bodies(out, strtoull(path + 10, NULL, 10));
        return;
    }
    if (strncmp(path, "/random?mb=", 11) == 0) {
        proxy_list_u8_t bytes;
        wasi_random_random_get_random_bytes(strtoull(path + 11, NULL, 10) << 20, &bytes);
        char text[64];
        snprintf(text, sizeof text, "got %zu\n", bytes.len);
        proxy_list_u8_free(&bytes);
        respond_text(out, 200, text);
        return;
    }
    if (strncmp(path, "/fields?n=", 10) != 0) {
        respond_text(out, 404, "not found\n");
        return;
    }
    size_t n = strtoull(path + 10, NULL, 10);
    memset(value, 'v', sizeof value);
    static char names[60][16];
    static wasi_http_types_tuple2_field_name_field_value_t entries[60];
    for (int i = 0; i < 60; i++) {
        snprintf(names[i], sizeof names[i], "x-hog-%d", i);
        entries[i].f0 = str(names[i]);
        entries[i].f1 = (wasi_http_types_field_value_t){value, sizeof value};
    }
    // Every map is ~60 KiB the host copies and holds for this instance; none is dropped
    // until the instance ends.
    size_t made = 0;
    for (; made < n; made++) {
        // A map past the resource cap (4096, a few taken already) would trap.
        if (made + 16 >= 4096) break;
        wasi_http_types_list_tuple2_field_name_field_value_t list = {entries, 60};
        wasi_http_types_own_fields_t fields;
        wasi_http_types_header_error_t err;
        if (!wasi_http_types_static_fields_from_list(&list, &fields, &err)) break;
    }
    wasi_http_types_method_t method;
    wasi_http_types_method_incoming_request_method(req, &method);
    if (method.tag == WASI_HTTP_TYPES_METHOD_POST) {
        wasi_cli_stderr_own_output_stream_t err_out = wasi_cli_stderr_get_stderr();
        proxy_list_u8_t line = {(uint8_t *)"guest holds fields\n", 19};
        wasi_io_streams_stream_error_t err;
        wasi_io_streams_method_output_stream_blocking_write_and_flush(
            wasi_io_streams_borrow_output_stream(err_out), &line, &err);
        wasi_io_streams_output_stream_drop_own(err_out);
        wasi_http_types_own_incoming_body_t body;
        if (wasi_http_types_method_incoming_request_consume(req, &body)) {
            wasi_http_types_own_input_stream_t in;
            if (wasi_http_types_method_incoming_body_stream(wasi_http_types_borrow_incoming_body(body), &in)) {
                proxy_list_u8_t got;
                if (wasi_io_streams_method_input_stream_blocking_read(wasi_io_streams_borrow_input_stream(in), 1,
                                                                      &got, &err)) {
                    proxy_list_u8_free(&got);
                }
                wasi_io_streams_input_stream_drop_own(in);
            }
            wasi_http_types_incoming_body_drop_own(body);
        }
    }
    char text[64];
    snprintf(text, sizeof text, "made %zu\n", made);
    respond_text(out, 200, text);
}
