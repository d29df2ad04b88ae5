// A wasi:http/proxy test guest for tests/all/serve.rs and benches/serve, on the C bindings
// `wit-bindgen c` makes from the WIT wasmtime-wasi-http ships. Routes:
//   GET  /hello...        200 "hello from wasm: METHOD PATH\n", x-served-by: wasm-oci-test
//   POST /echo            201 with the request body, x-echoed-header: the request's x-echo
//   GET  /trap            traps (unreachable) before answering
//   GET  /spin            says "guest spinning" on stderr, loops forever in wasm
//   GET  /sleep?ms=N      says "guest sleeping" on stderr, sleeps N ms in a host call, answers
//   GET  /fetch?to=H:P    GET http://H:P/from-wasm, answers 200 "upstream said: BODY" or 502
//   GET  /alloc?mb=N      allocates and touches N MiB, answers 200; traps if malloc fails
//   POST /alloc?mb=N      the same, then says "guest allocated" and reads the body before answering
//   anything else         404 "not found\n"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy.h"

typedef wasi_http_types_own_outgoing_response_t response_t;

static proxy_string_t str(const char *s) {
    return (proxy_string_t){(uint8_t *)s, strlen(s)};
}

static void write_all(wasi_io_streams_borrow_output_stream_t out, const uint8_t *data, size_t len) {
    // blocking-write-and-flush takes at most 4096 bytes at a time.
    while (len > 0) {
        size_t n = len < 4096 ? len : 4096;
        proxy_list_u8_t chunk = {(uint8_t *)data, n};
        wasi_io_streams_stream_error_t err;
        if (!wasi_io_streams_method_output_stream_blocking_write_and_flush(out, &chunk, &err)) {
            return;
        }
        data += n;
        len -= n;
    }
}

static void say(const char *line) {
    wasi_cli_stderr_own_output_stream_t err = wasi_cli_stderr_get_stderr();
    write_all(wasi_io_streams_borrow_output_stream(err), (const uint8_t *)line, strlen(line));
    wasi_io_streams_output_stream_drop_own(err);
}

static void add_header(wasi_http_types_borrow_fields_t fields, const char *name, const uint8_t *value,
                       size_t len) {
    wasi_http_types_field_name_t n = str(name);
    wasi_http_types_field_value_t v = {(uint8_t *)value, len};
    wasi_http_types_header_error_t err;
    wasi_http_types_method_fields_append(fields, &n, &v, &err);
}

// Sends a whole response: status, headers (name, value pairs, NULL-terminated), body.
static void respond(wasi_http_types_own_response_outparam_t out, int status, const char **headers,
                    const uint8_t *body, size_t len) {
    wasi_http_types_own_fields_t fields = wasi_http_types_constructor_fields();
    for (const char **h = headers; h && *h; h += 2) {
        add_header(wasi_http_types_borrow_fields(fields), h[0], (const uint8_t *)h[1], strlen(h[1]));
    }
    response_t response = wasi_http_types_constructor_outgoing_response(fields);
    wasi_http_types_borrow_outgoing_response_t r = wasi_http_types_borrow_outgoing_response(response);
    wasi_http_types_method_outgoing_response_set_status_code(r, status);
    wasi_http_types_own_outgoing_body_t body_handle;
    wasi_http_types_method_outgoing_response_body(r, &body_handle);
    wasi_http_types_result_own_outgoing_response_error_code_t result = {.is_err = false};
    result.val.ok = response;
    wasi_http_types_static_response_outparam_set(out, &result);
    wasi_http_types_own_output_stream_t stream;
    wasi_http_types_method_outgoing_body_write(wasi_http_types_borrow_outgoing_body(body_handle), &stream);
    write_all(wasi_io_streams_borrow_output_stream(stream), body, len);
    wasi_io_streams_output_stream_drop_own(stream);
    wasi_http_types_error_code_t error;
    wasi_http_types_static_outgoing_body_finish(body_handle, NULL, &error);
}

static void respond_text(wasi_http_types_own_response_outparam_t out, int status, const char *text) {
    const char *headers[] = {"content-type", "text/plain", NULL};
    respond(out, status, headers, (const uint8_t *)text, strlen(text));
}

// Reads a whole incoming body stream into a malloc'd buffer.
static uint8_t *read_all(wasi_io_streams_own_input_stream_t in, size_t *len) {
    size_t cap = 1024;
    uint8_t *buf = malloc(cap);
    *len = 0;
    for (;;) {
        proxy_list_u8_t chunk;
        wasi_io_streams_stream_error_t err;
        if (!wasi_io_streams_method_input_stream_blocking_read(
                wasi_io_streams_borrow_input_stream(in), 65536, &chunk, &err)) {
            break;
        }
        if (*len + chunk.len > cap) {
            while (*len + chunk.len > cap) cap *= 2;
            buf = realloc(buf, cap);
        }
        memcpy(buf + *len, chunk.ptr, chunk.len);
        *len += chunk.len;
        proxy_list_u8_free(&chunk);
    }
    wasi_io_streams_input_stream_drop_own(in);
    return buf;
}

static uint8_t *incoming_body(wasi_http_types_borrow_incoming_request_t request, size_t *len) {
    wasi_http_types_own_incoming_body_t body;
    *len = 0;
    if (!wasi_http_types_method_incoming_request_consume(request, &body)) return NULL;
    wasi_http_types_own_input_stream_t stream;
    if (!wasi_http_types_method_incoming_body_stream(wasi_http_types_borrow_incoming_body(body), &stream)) {
        return NULL;
    }
    uint8_t *data = read_all(stream, len);
    wasi_http_types_incoming_body_drop_own(body);
    return data;
}

static void fetch(const char *to, wasi_http_types_own_response_outparam_t out) {
    char text[512];
    wasi_http_types_own_fields_t fields = wasi_http_types_constructor_fields();
    wasi_http_types_own_outgoing_request_t request = wasi_http_types_constructor_outgoing_request(fields);
    wasi_http_types_borrow_outgoing_request_t r = wasi_http_types_borrow_outgoing_request(request);
    wasi_http_types_scheme_t scheme = {.tag = WASI_HTTP_TYPES_SCHEME_HTTP};
    wasi_http_types_method_outgoing_request_set_scheme(r, &scheme);
    proxy_string_t authority = str(to);
    wasi_http_types_method_outgoing_request_set_authority(r, &authority);
    proxy_string_t path = str("/from-wasm");
    wasi_http_types_method_outgoing_request_set_path_with_query(r, &path);
    wasi_http_types_own_outgoing_body_t body;
    wasi_http_types_method_outgoing_request_body(r, &body);
    wasi_http_types_error_code_t error;
    wasi_http_types_static_outgoing_body_finish(body, NULL, &error);

    wasi_http_outgoing_handler_own_future_incoming_response_t future;
    wasi_http_outgoing_handler_error_code_t handler_error;
    if (!wasi_http_outgoing_handler_handle(request, NULL, &future, &handler_error)) {
        snprintf(text, sizeof text, "outbound request failed: handle %d\n", handler_error.tag);
        respond_text(out, 502, text);
        return;
    }
    wasi_http_types_borrow_future_incoming_response_t f = wasi_http_types_borrow_future_incoming_response(future);
    wasi_http_types_result_result_own_incoming_response_error_code_void_t result;
    while (!wasi_http_types_method_future_incoming_response_get(f, &result)) {
        wasi_io_poll_own_pollable_t ready = wasi_http_types_method_future_incoming_response_subscribe(f);
        wasi_io_poll_method_pollable_block(wasi_io_poll_borrow_pollable(ready));
        wasi_io_poll_pollable_drop_own(ready);
    }
    if (result.is_err || result.val.ok.is_err) {
        const char *why = "unknown";
        if (!result.is_err && result.val.ok.val.err.tag == WASI_HTTP_TYPES_ERROR_CODE_HTTP_REQUEST_DENIED) {
            why = "HTTP-request-denied";
        } else if (!result.is_err && result.val.ok.val.err.tag == WASI_HTTP_TYPES_ERROR_CODE_CONNECTION_REFUSED) {
            why = "connection-refused";
        }
        snprintf(text, sizeof text, "outbound request failed: %s\n", why);
        respond_text(out, 502, text);
        return;
    }
    wasi_http_types_own_incoming_response_t response = result.val.ok.val.ok;
    wasi_http_types_own_incoming_body_t incoming;
    wasi_http_types_method_incoming_response_consume(wasi_http_types_borrow_incoming_response(response),
                                                     &incoming);
    wasi_http_types_own_input_stream_t stream;
    wasi_http_types_method_incoming_body_stream(wasi_http_types_borrow_incoming_body(incoming), &stream);
    size_t len;
    uint8_t *data = read_all(stream, &len);
    snprintf(text, sizeof text, "upstream said: %.*s", (int)len, (const char *)data);
    respond_text(out, 200, text);
}

static void sleep_ms(uint64_t ms) {
    wasi_io_poll_own_pollable_t p = wasi_clocks_monotonic_clock_subscribe_duration(ms * 1000000ull);
    wasi_io_poll_method_pollable_block(wasi_io_poll_borrow_pollable(p));
    wasi_io_poll_pollable_drop_own(p);
}

void exports_wasi_http_incoming_handler_handle(exports_wasi_http_incoming_handler_own_incoming_request_t request,
                                               exports_wasi_http_incoming_handler_own_response_outparam_t out) {
    wasi_http_types_borrow_incoming_request_t req = wasi_http_types_borrow_incoming_request(request);
    wasi_http_types_method_t method;
    wasi_http_types_method_incoming_request_method(req, &method);
    proxy_string_t path_with_query;
    char path[1024] = "/";
    if (wasi_http_types_method_incoming_request_path_with_query(req, &path_with_query)) {
        size_t n = path_with_query.len < sizeof path - 1 ? path_with_query.len : sizeof path - 1;
        memcpy(path, path_with_query.ptr, n);
        path[n] = 0;
    }
    const char *method_name = method.tag == WASI_HTTP_TYPES_METHOD_GET    ? "GET"
                              : method.tag == WASI_HTTP_TYPES_METHOD_POST ? "POST"
                                                                          : "OTHER";

    if (strncmp(path, "/hello", 6) == 0) {
        char text[1200];
        snprintf(text, sizeof text, "hello from wasm: %s %s\n", method_name, path);
        const char *headers[] = {"content-type", "text/plain", "x-served-by", "wasm-oci-test", NULL};
        respond(out, 200, headers, (const uint8_t *)text, strlen(text));
    } else if (strcmp(path, "/echo") == 0) {
        wasi_http_types_own_headers_t headers = wasi_http_types_method_incoming_request_headers(req);
        wasi_http_types_field_name_t name = str("x-echo");
        wasi_http_types_list_field_value_t values;
        wasi_http_types_method_fields_get(wasi_http_types_borrow_fields(headers), &name, &values);
        size_t len;
        uint8_t *body = incoming_body(req, &len);
        wasi_http_types_own_fields_t fields = wasi_http_types_constructor_fields();
        if (values.len > 0) {
            add_header(wasi_http_types_borrow_fields(fields), "x-echoed-header", values.ptr[0].ptr,
                       values.ptr[0].len);
        }
        response_t response = wasi_http_types_constructor_outgoing_response(fields);
        wasi_http_types_borrow_outgoing_response_t r = wasi_http_types_borrow_outgoing_response(response);
        wasi_http_types_method_outgoing_response_set_status_code(r, 201);
        wasi_http_types_own_outgoing_body_t body_handle;
        wasi_http_types_method_outgoing_response_body(r, &body_handle);
        wasi_http_types_result_own_outgoing_response_error_code_t result = {.is_err = false};
        result.val.ok = response;
        wasi_http_types_static_response_outparam_set(out, &result);
        wasi_http_types_own_output_stream_t stream;
        wasi_http_types_method_outgoing_body_write(wasi_http_types_borrow_outgoing_body(body_handle), &stream);
        write_all(wasi_io_streams_borrow_output_stream(stream), body, len);
        wasi_io_streams_output_stream_drop_own(stream);
        wasi_http_types_error_code_t error;
        wasi_http_types_static_outgoing_body_finish(body_handle, NULL, &error);
    } else if (strcmp(path, "/trap") == 0) {
        __builtin_trap();
    } else if (strcmp(path, "/spin") == 0) {
        say("guest spinning\n");
        for (volatile int i = 0;; i++) {
        }
    } else if (strncmp(path, "/sleep?ms=", 10) == 0) {
        uint64_t ms = strtoull(path + 10, NULL, 10);
        say("guest sleeping\n");
        sleep_ms(ms);
        char text[64];
        snprintf(text, sizeof text, "slept %llu ms\n", (unsigned long long)ms);
        respond_text(out, 200, text);
    } else if (strncmp(path, "/alloc?mb=", 10) == 0) {
        size_t mb = strtoull(path + 10, NULL, 10);
        char *block = malloc(mb << 20);
        if (!block) __builtin_trap();
        memset(block, 1, mb << 20);
        // Keeps clang from leaving out an allocation nothing reads.
        __asm__ volatile("" : : "r"(block) : "memory");
        if (method.tag == WASI_HTTP_TYPES_METHOD_POST) {
            // Holds the memory until the client has sent its whole body.
            say("guest allocated\n");
            size_t len;
            free(incoming_body(req, &len));
        }
        char text[64];
        snprintf(text, sizeof text, "allocated %zu MiB\n", mb);
        respond_text(out, 200, text);
    } else if (strncmp(path, "/fetch?to=", 10) == 0) {
        fetch(path + 10, out);
    } else {
        respond_text(out, 404, "not found\n");
    }
}
