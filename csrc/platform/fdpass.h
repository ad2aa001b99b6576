/* fdpass.h — pass one file descriptor with a small payload over a Unix socket (SCM_RIGHTS).
 * nng cannot carry fds, so lease fds travel on a side socket (docs/design.md). Internal. */
#ifndef AGILE_FDPASS_H
#define AGILE_FDPASS_H

#include <stddef.h>

/* agile__fd_send: send len bytes (1..4096; a zero-length message cannot carry an fd on
 * SOCK_STREAM) with fd attached (fd < 0: none). The caller keeps fd. Blocks; EINTR is
 * retried. A short write on a stream socket is AGILE_EPROTO. */
int agile__fd_send(int sock, int fd, const void *data, size_t len);

/* agile__fd_recv: receive one message of at most cap bytes; *got is its length (0 = peer
 * closed: AGILE_ECLOSED). *fd is the received descriptor (close-on-exec), or -1 when the
 * message carried none; the caller owns it. Extra descriptors are closed; a truncated
 * message or control part is AGILE_EPROTO (and nothing is leaked). Blocks. */
int agile__fd_recv(int sock, int *fd, void *data, size_t cap, size_t *got);

#endif
