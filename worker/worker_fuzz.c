/* libFuzzer target: the worker's message handler, not only the decoder. Each input is a
 * sequence of requests ([u8 conn][u16 len][len bytes]...) sent on a bound session (conn
 * even) or an unbound connection (conn odd), on the host backend with leases and all.
 * Whatever the bytes, the handler answers (an error reply for malformed ones), never
 * crashes, and a teardown afterwards releases every object, byte and in-flight count. */
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "worker.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static agile__worker w;
static int ready;

static void drain(int fd)
{
    char buf[256], cbuf[CMSG_SPACE(sizeof(int) * 4)];
    for (;;) {
        struct iovec iov = {buf, sizeof buf};
        struct msghdr mh = {0};
        mh.msg_iov = &iov;
        mh.msg_iovlen = 1;
        mh.msg_control = cbuf;
        mh.msg_controllen = sizeof cbuf;
        if (recvmsg(fd, &mh, MSG_DONTWAIT) <= 0)
            return;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
            if (c->cmsg_type == SCM_RIGHTS) {
                int fd2;
                memcpy(&fd2, CMSG_DATA(c), sizeof fd2);
                close(fd2);
            }
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int sp[2];
    agile__session *s;
    char err[256] = "";
    if (!ready) {
        agile__log_set_level(AGILE_LOG_ERROR);
        agile__worker_zero(&w);
        /* small quota and steps so leases are cheap */
        w.cfg.dflt.quota = 256ull << 20;
        w.cfg.dflt.lease_step = 2ull << 20;
        if (agile__worker_init_core(&w, AGILE_BACKEND_KIND_HOST, NULL, err, sizeof err) != AGILE_OK)
            abort();
        ready = 1;
    }
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) != 0)
        return 0;
    if (agile__session_new(&w, sp[0], (uint32_t)getuid(), getpid(), &s) != AGILE_OK)
        abort();
    agile__session *b = agile__session_bind(&w, s->token[0], s->token[1], 100, (uint32_t)getuid());
    if (b != s)
        abort();
    agile__session_rele(b);
    size_t off = 0;
    while (off + 3 <= size) {
        uint8_t conn = data[off];
        size_t len = (size_t)data[off + 1] | ((size_t)data[off + 2] << 8);
        off += 3;
        if (len > size - off)
            len = size - off;
        uint8_t *req = malloc(len ? len : 1), *rep = NULL;
        size_t replen = 0;
        memcpy(req, data + off, len);
        off += len;
        int rv = agile__worker_handle(&w, (conn & 1) ? 101 : 100, (uint32_t)getuid(), req, len,
                                      &rep, &replen);
        if (rv == AGILE_OK) {
            agile__msg m;
            /* every reply is well formed */
            if (agile__msg_decode(rep, replen, &m) != AGILE_OK || !(m.h.flags & AGILE_MSGF_REPLY))
                abort();
        } else if (rv != AGILE_ENOMEM || rep) {
            abort(); /* every request is answered: only a failed allocation leaves it to
                        agile__worker_error_reply */
        }
        free(rep);
        free(req);
        drain(sp[1]);
    }
    agile__session_kill(s, "fuzz input done");
    agile__sessions_reap(&w);
    drain(sp[1]);
    close(sp[1]);
    /* nothing leaks from one input to the next */
    for (agile__tenant *t = w.tenants; t; t = t->next)
        if (t->leased[0] != 0 || t->sessions != 0 || t->pending != 0 || t->objs.live != 0 ||
            atomic_load(&t->requests_inflight) != 0 || atomic_load(&t->loads_inflight) != 0)
            abort();
    if (w.objs.live != 0)
        abort();
    return 0;
}
