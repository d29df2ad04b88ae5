// A wasi:cli/command test guest for tests/all/serve.rs that connects over wasi:sockets: given
// IPV4:PORT, it connects, sends "hello over wasi:sockets\n", and prints
// "connected to IPV4:PORT", or "cannot connect to IPV4:PORT: ERROR" and fails.
#include <stdio.h>
#include <string.h>

#include "client.h"

static const char *error_name(wasi_sockets_network_error_code_t code) {
    switch (code) {
    case WASI_SOCKETS_NETWORK_ERROR_CODE_ACCESS_DENIED: return "access-denied";
    case WASI_SOCKETS_NETWORK_ERROR_CODE_CONNECTION_REFUSED: return "connection-refused";
    case WASI_SOCKETS_NETWORK_ERROR_CODE_NOT_SUPPORTED: return "not-supported";
    case WASI_SOCKETS_NETWORK_ERROR_CODE_INVALID_ARGUMENT: return "invalid-argument";
    default: return "other";
    }
}

static bool fail(const char *target, wasi_sockets_network_error_code_t code) {
    printf("cannot connect to %s: %s\n", target, error_name(code));
    fflush(stdout);
    return false;
}

bool exports_wasi_cli_run_run(void) {
    client_list_string_t args;
    wasi_cli_environment_get_arguments(&args);
    if (args.len < 2) {
        printf("usage: tcp_client IPV4:PORT\n");
        fflush(stdout);
        return false;
    }
    char target[64] = {0};
    size_t n = args.ptr[1].len < sizeof target - 1 ? args.ptr[1].len : sizeof target - 1;
    memcpy(target, args.ptr[1].ptr, n);
    unsigned a, b, c, d, port;
    if (sscanf(target, "%u.%u.%u.%u:%u", &a, &b, &c, &d, &port) != 5) {
        printf("not IPV4:PORT: %s\n", target);
        fflush(stdout);
        return false;
    }

    wasi_sockets_tcp_create_socket_own_tcp_socket_t sock;
    wasi_sockets_network_error_code_t err;
    if (!wasi_sockets_tcp_create_socket_create_tcp_socket(WASI_SOCKETS_NETWORK_IP_ADDRESS_FAMILY_IPV4, &sock,
                                                          &err)) {
        return fail(target, err);
    }
    wasi_sockets_tcp_borrow_tcp_socket_t s = wasi_sockets_tcp_borrow_tcp_socket(sock);
    wasi_sockets_instance_network_own_network_t net = wasi_sockets_instance_network_instance_network();
    wasi_sockets_network_ip_socket_address_t addr = {.tag = WASI_SOCKETS_NETWORK_IP_SOCKET_ADDRESS_IPV4};
    addr.val.ipv4.port = (uint16_t)port;
    addr.val.ipv4.address.f0 = (uint8_t)a;
    addr.val.ipv4.address.f1 = (uint8_t)b;
    addr.val.ipv4.address.f2 = (uint8_t)c;
    addr.val.ipv4.address.f3 = (uint8_t)d;
    if (!wasi_sockets_tcp_method_tcp_socket_start_connect(s, wasi_sockets_network_borrow_network(net), &addr,
                                                          &err)) {
        return fail(target, err);
    }
    wasi_sockets_tcp_tuple2_own_input_stream_own_output_stream_t streams;
    for (;;) {
        if (wasi_sockets_tcp_method_tcp_socket_finish_connect(s, &streams, &err)) break;
        if (err != WASI_SOCKETS_NETWORK_ERROR_CODE_WOULD_BLOCK) return fail(target, err);
        wasi_io_poll_own_pollable_t ready = wasi_sockets_tcp_method_tcp_socket_subscribe(s);
        wasi_io_poll_method_pollable_block(wasi_io_poll_borrow_pollable(ready));
        wasi_io_poll_pollable_drop_own(ready);
    }
    const char *hello = "hello over wasi:sockets\n";
    client_list_u8_t data = {(uint8_t *)hello, strlen(hello)};
    wasi_io_streams_stream_error_t stream_err;
    wasi_io_streams_method_output_stream_blocking_write_and_flush(
        wasi_io_streams_borrow_output_stream(streams.f1), &data, &stream_err);
    wasi_io_streams_output_stream_drop_own(streams.f1);
    wasi_io_streams_input_stream_drop_own(streams.f0);
    wasi_sockets_tcp_tcp_socket_drop_own(sock);
    printf("connected to %s\n", target);
    fflush(stdout);
    return true;
}
