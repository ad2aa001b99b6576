/* worker_live_fuzz: drives a LIVE agile-worker over its real sockets (nng ipc and the fd
 * socket) with connection churn and malformed and valid messages interleaved, and checks
 * after every burst that the worker still answers a fresh client (fd socket token, HELLO,
 * STATUS) within a bound. Every request it sends and waits for must get a reply: a malformed
 * request is answered with an error, never left without an answer.
 *
 *   worker_live_fuzz [--seconds N] [--seed S] [--storm CONNS MSGS] [--hold CONNS]
 *                    [--runtime-dir DIR] [--worker PATH]
 *
 * Without --runtime-dir it starts `PATH --foreground --backend host` (default: agile-worker
 * beside this binary's ../bin) in a fresh temporary dir and stops it at the end (its exit
 * status must be 0). --seconds defaults to $AGILE_FUZZ_SECONDS, else 10. --storm runs the
 * issue-12 attack instead of the random bursts: CONNS connections, each sending MSGS
 * malformed messages and closing, then one probe; it prints how long each part took.
 * Exit status 0: the worker stayed responsive throughout; 1: it did not (with the seed and
 * the worker's log). --hold CONNS opens CONNS control connections that never send anything,
 * prints "holding" and keeps them until stdin closes (a tenant hoarding connections). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>

#include "core.h"

#define REPLY_MS 10000 /* a loaded 2-core machine running ASan builds is slow, not stuck */
#define PROBE_MS 10000
#define MAX_PENDING 8

static char g_dir[PATH_MAX / 2], g_log[PATH_MAX];
static pid_t g_worker = -1;
static uint64_t g_rng;
static uint64_t g_sent, g_replies, g_bursts, g_probes, g_probe_max_ns;

static uint64_t rnd(void)
{
    /* xorshift64*: reproducible from the printed seed */
    g_rng ^= g_rng >> 12;
    g_rng ^= g_rng << 25;
    g_rng ^= g_rng >> 27;
    return g_rng * 0x2545F4914F6CDD1Dull;
}

static uint32_t below(uint32_t n)
{
    return n ? (uint32_t)(rnd() % n) : 0;
}

static void dump_log(void)
{
    char buf[4096];
    int fd = open(g_log, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    off_t end = lseek(fd, 0, SEEK_END);
    lseek(fd, end > (off_t)sizeof buf ? end - (off_t)sizeof buf : 0, SEEK_SET);
    ssize_t n = read(fd, buf, sizeof buf);
    close(fd);
    if (n > 0) {
        fprintf(stderr, "--- worker log (tail)\n");
        fwrite(buf, 1, (size_t)n, stderr);
    }
}

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "worker_live_fuzz: FAIL: ");
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    dump_log();
    if (g_worker > 0)
        kill(g_worker, SIGKILL);
    exit(1);
}

static void check_alive(void)
{
    int st;
    if (g_worker > 0 && waitpid(g_worker, &st, WNOHANG) == g_worker) {
        g_worker = -1;
        die("the worker exited (status %#x)", st);
    }
}

/* ---- fd socket ---------------------------------------------------------------------------- */

static int fd_connect(void)
{
    struct sockaddr_un sa = {0};
    sa.sun_family = AF_UNIX;
    if ((size_t)snprintf(sa.sun_path, sizeof sa.sun_path, "%.*s/agile.fd.sock",
                         (int)(sizeof sa.sun_path - 16), g_dir) >= sizeof sa.sun_path)
        return -1;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* The TOKEN record the worker greets every fd-socket connection with. 0: got it. */
static int read_token(int fd, int timeout_ms, uint64_t tok[2], uint16_t *kind)
{
    uint8_t rec[AGILE_FDREC_SIZE];
    struct pollfd pf = {fd, POLLIN, 0};
    if (poll(&pf, 1, timeout_ms) != 1)
        return -1;
    if (recv(fd, rec, sizeof rec, MSG_WAITALL) != (ssize_t)sizeof rec)
        return -1;
    agile__rbuf rb = {rec, sizeof rec, 0, 0};
    if (agile__get_u32(&rb) != AGILE_FDREC_MAGIC)
        return -1;
    (void)agile__get_u16(&rb);
    *kind = agile__get_u16(&rb);
    (void)agile__get_u64(&rb);
    (void)agile__get_u64(&rb);
    tok[0] = agile__get_u64(&rb);
    tok[1] = agile__get_u64(&rb);
    return 0;
}

/* ---- nng ---------------------------------------------------------------------------------- */

static int nng_connect(nng_socket *s)
{
    char url[PATH_MAX];
    if (nng_req0_open(s) != 0)
        return -1;
    nng_socket_set_ms(*s, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE);
    nng_socket_set_ms(*s, NNG_OPT_RECVTIMEO, REPLY_MS);
    nng_socket_set_ms(*s, NNG_OPT_SENDTIMEO, REPLY_MS);
    snprintf(url, sizeof url, "ipc://%s/agile.sock", g_dir);
    if (nng_dial(*s, url, NULL, 0) != 0) {
        nng_close(*s);
        return -1;
    }
    return 0;
}

static uint64_t g_last_handle; /* the handle of the last OBJ_CREATE / LEASE_GROW reply */

/* Send len bytes; with wait, the reply must come (and be a well-formed reply). Returns its
 * status, or -1 when not waiting. (Every request is waited for: nng 1.5's nng_close can
 * hang on a req socket with a request in flight, so the churn closes between requests.) */
static int roundtrip(nng_socket s, const uint8_t *buf, size_t len, int wait, const char *what)
{
    void *rep = NULL;
    size_t replen = 0;
    int rv;
    agile__msg m;
    if ((rv = nng_send(s, (void *)buf, len, 0)) != 0)
        die("%s: send of %zu bytes failed: %s", what, len, nng_strerror(rv));
    g_sent++;
    if (!wait)
        return -1;
    if ((rv = nng_recv(s, &rep, &replen, NNG_FLAG_ALLOC)) != 0)
        die("%s: no reply to a %zu-byte request within %d ms: %s", what, len, REPLY_MS,
            nng_strerror(rv));
    g_replies++;
    rv = agile__msg_decode(rep, replen, &m);
    if (rv == AGILE_OK && m.h.status == AGILE_OK && m.h.type == AGILE_MSG_OBJ_CREATE)
        g_last_handle = m.u.handle.handle;
    else if (rv == AGILE_OK && m.h.status == AGILE_OK && m.h.type == AGILE_MSG_LEASE_GROW)
        g_last_handle = m.u.lease_grow_rep.handle;
    nng_free(rep, replen);
    if (rv != AGILE_OK || !(m.h.flags & AGILE_MSGF_REPLY))
        die("%s: malformed reply (%s)", what, agile_strerror(rv));
    return m.h.status;
}

static size_t encode(agile__msg *m, uint8_t *buf, size_t cap)
{
    size_t len = 0;
    m->h.flags = 0;
    m->h.status = 0;
    m->h.req_id = rnd();
    if (agile__msg_encode(m, buf, cap, &len) != AGILE_OK)
        die("cannot encode a %s request", agile__msg_name(m->h.type));
    return len;
}

static size_t hello(uint8_t *buf, size_t cap, const uint64_t tok[2])
{
    agile__msg m;
    memset(&m, 0, sizeof m);
    m.h.type = AGILE_MSG_HELLO;
    m.u.hello_req.major = AGILE_WIRE_MAJOR;
    m.u.hello_req.minor = AGILE_WIRE_MINOR;
    m.u.hello_req.token_lo = tok[0];
    m.u.hello_req.token_hi = tok[1];
    m.u.hello_req.pid = (uint32_t)getpid();
    return encode(&m, buf, cap);
}

/* A valid request of a random type with random (often invalid) fields. */
static size_t valid_request(uint8_t *buf, size_t cap, const uint64_t *handles, int nh)
{
    static const char ptx[] = ".version 8.0\n.target sm_80\n.address_size 64\n"
                              ".visible .entry k()\n{\n ret;\n}\n";
    agile__msg m;
    memset(&m, 0, sizeof m);
    uint64_t h = nh && below(4) ? handles[below((uint32_t)nh)] : rnd();
    switch (below(10)) {
    case 0: m.h.type = AGILE_MSG_PING; m.u.ping.nonce = rnd(); break;
    case 1: m.h.type = AGILE_MSG_STATUS; m.u.status_req.format = below(3); break;
    case 2:
        m.h.type = AGILE_MSG_OBJ_CREATE;
        m.u.obj_create_req.type = below(10);
        m.u.obj_create_req.device = below(2);
        break;
    case 3: m.h.type = AGILE_MSG_OBJ_DESTROY; m.u.handle.handle = h; break;
    case 4: m.h.type = AGILE_MSG_WINDOW; m.u.window_req.device = below(3); break;
    case 5:
        m.h.type = AGILE_MSG_LEASE_GROW;
        m.u.lease_grow_req.bytes = below(2) ? 1 + below(4 << 20) : rnd();
        m.u.lease_grow_req.device = below(2);
        break;
    case 6: m.h.type = AGILE_MSG_LEASE_RELEASE; m.u.handle.handle = h; break;
    case 7:
        m.h.type = AGILE_MSG_MODULE_LOAD;
        m.u.module_load_req.ptx = agile__blob_of(ptx, below(2) ? sizeof ptx - 1 : below(40));
        break;
    case 8:
        m.h.type = AGILE_MSG_MOD_CTL;
        m.u.mod_ctl_req.module = below(3);
        m.u.mod_ctl_req.op = below(8);
        break;
    default: m.h.type = AGILE_MSG_HELLO; m.u.hello_req.major = 1; m.u.hello_req.token_lo = rnd(); break;
    }
    return encode(&m, buf, cap);
}

/* Malformed: random bytes, a truncated valid message, the right magic with garbage, a
 * lying length, a reply flag, another major, unknown types. */
static size_t malformed(uint8_t *buf, size_t cap)
{
    size_t len = valid_request(buf, cap, NULL, 0);
    switch (below(8)) {
    case 0:
        len = 1 + below(96);
        for (size_t i = 0; i < len; i++)
            buf[i] = (uint8_t)rnd();
        break;
    case 1: len = below((uint32_t)len); break;
    case 2:
        len = AGILE_WIRE_HDR_SIZE + below(64);
        for (size_t i = 4; i < len; i++)
            buf[i] = (uint8_t)rnd();
        break;
    case 3: buf[12] = (uint8_t)rnd(); buf[13] = (uint8_t)rnd(); break; /* body_len */
    case 4: buf[10] |= AGILE_MSGF_REPLY; break;
    case 5: buf[4] = (uint8_t)(2 + below(200)); break;                  /* major */
    case 6: buf[8] = (uint8_t)rnd(); buf[9] = (uint8_t)rnd(); break;    /* type */
    default:
        for (int k = 0; k < 4; k++)
            buf[below((uint32_t)len)] ^= (uint8_t)(1u << below(8));
    }
    if (len == 0)
        len = 1; /* nng carries empty messages too, but the reply comes all the same */
    return len;
}

/* ---- actions ------------------------------------------------------------------------------ */

static int g_pending[MAX_PENDING], g_npending;

static void act_fd_churn(void)
{
    int fd = fd_connect();
    if (fd < 0)
        return;
    switch (below(3)) {
    case 0: break; /* connect, close */
    case 1: {      /* bytes on a socket the worker never reads from clients */
        uint8_t junk[64];
        for (size_t i = 0; i < sizeof junk; i++)
            junk[i] = (uint8_t)rnd();
        if (send(fd, junk, 1 + below(sizeof junk), MSG_NOSIGNAL) < 0) {
            /* the worker may have hung up first */
        }
        break;
    }
    default: /* a pending connection: token, never HELLO; a few are kept open */
        if (g_npending < MAX_PENDING) {
            g_pending[g_npending++] = fd;
            return;
        }
        close(g_pending[0]);
        memmove(g_pending, g_pending + 1, (MAX_PENDING - 1) * sizeof *g_pending);
        g_pending[MAX_PENDING - 1] = fd;
        return;
    }
    close(fd);
}

static void act_unbound(uint8_t *buf, size_t cap)
{
    nng_socket s;
    int n = 1 + (int)below(8);
    if (nng_connect(&s) != 0)
        die("cannot dial the worker's nng socket");
    for (int i = 0; i < n; i++) {
        size_t len = below(3) ? malformed(buf, cap) : valid_request(buf, cap, NULL, 0);
        roundtrip(s, buf, len, 1, "unbound connection");
    }
    nng_close(s);
}

static void act_session(uint8_t *buf, size_t cap)
{
    uint64_t tok[2], handles[16];
    uint16_t kind;
    int nh = 0, fd = fd_connect(), n = 1 + (int)below(24);
    nng_socket s;
    if (fd < 0)
        die("cannot connect to the fd socket");
    if (read_token(fd, REPLY_MS, tok, &kind) != 0 || kind != AGILE_FDREC_TOKEN) {
        /* refused (a tenant limit) with a record saying why, or closed */
        close(fd);
        return;
    }
    if (nng_connect(&s) != 0)
        die("cannot dial the worker's nng socket");
    size_t len = hello(buf, cap, tok);
    if (below(8) == 0)
        buf[32 + below((uint32_t)(len - 32))] ^= 0x40; /* a damaged HELLO */
    roundtrip(s, buf, len, 1, "HELLO");
    for (int i = 0; i < n; i++) {
        len = below(3) ? valid_request(buf, cap, handles, nh) : malformed(buf, cap);
        g_last_handle = 0;
        roundtrip(s, buf, len, 1, "session");
        /* handles the worker gave out: destroying them (twice, with the wrong type) later
         * exercises the table */
        if (g_last_handle && nh < 16)
            handles[nh++] = g_last_handle;
        if (below(32) == 0) {
            close(fd); /* the fd socket first: the worker tears down mid-conversation */
            fd = -1;
        }
    }
    if (fd >= 0 && below(2)) {
        agile__msg m;
        memset(&m, 0, sizeof m);
        m.h.type = AGILE_MSG_BYE;
        len = encode(&m, buf, cap);
        roundtrip(s, buf, len, 1, "BYE");
    }
    nng_close(s);
    if (fd >= 0)
        close(fd);
}

/* A fresh client: token, HELLO, STATUS, each answered within PROBE_MS. */
static void probe(uint8_t *buf, size_t cap, const char *after)
{
    uint64_t t0 = agile__now_ns(), tok[2];
    uint16_t kind = 0;
    nng_socket s;
    agile__msg m;
    int fd = fd_connect(), st;
    check_alive();
    if (fd < 0)
        die("probe after %s: cannot connect to the fd socket: %s", after, strerror(errno));
    if (read_token(fd, PROBE_MS, tok, &kind) != 0 || kind != AGILE_FDREC_TOKEN)
        die("probe after %s: no token within %d ms (record kind %u)", after, PROBE_MS, kind);
    if (nng_connect(&s) != 0)
        die("probe after %s: cannot dial", after);
    if ((st = roundtrip(s, buf, hello(buf, cap, tok), 1, "probe HELLO")) != AGILE_OK)
        die("probe after %s: HELLO refused: %s", after, agile_strerror(st));
    memset(&m, 0, sizeof m);
    m.h.type = AGILE_MSG_STATUS;
    if ((st = roundtrip(s, buf, encode(&m, buf, cap), 1, "probe STATUS")) != AGILE_OK)
        die("probe after %s: STATUS refused: %s", after, agile_strerror(st));
    nng_close(s);
    close(fd);
    uint64_t dt = agile__now_ns() - t0;
    if (dt > (uint64_t)PROBE_MS * 1000000ull)
        die("probe after %s took %.0f ms", after, (double)dt / 1e6);
    if (dt > g_probe_max_ns)
        g_probe_max_ns = dt;
    g_probes++;
}

/* ---- the worker --------------------------------------------------------------------------- */

static void start_worker(const char *path)
{
    char tmpl[] = "/tmp/agile-livefuzz-XXXXXX", sock[PATH_MAX];
    if (!mkdtemp(tmpl))
        die("mkdtemp: %s", strerror(errno));
    snprintf(g_dir, sizeof g_dir, "%s/rt", tmpl);
    snprintf(g_log, sizeof g_log, "%s/worker.log", tmpl);
    g_worker = fork();
    if (g_worker < 0)
        die("fork: %s", strerror(errno));
    if (g_worker == 0) {
        int fd = open(g_log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execl(path, path, "--foreground", "--backend", "host", "--runtime-dir", g_dir,
              "--log-level", "warn", (char *)NULL);
        _exit(127);
    }
    snprintf(sock, sizeof sock, "%s/agile.sock", g_dir);
    for (int i = 0; i < 1000; i++) { /* up to 20 s */
        struct stat st;
        check_alive();
        if (stat(sock, &st) == 0)
            return;
        usleep(20000);
    }
    die("the worker did not come up on %s", g_dir);
}

static void stop_worker(void)
{
    int st = 0;
    if (g_worker <= 0)
        return;
    kill(g_worker, SIGTERM);
    for (int i = 0; i < 1500; i++) { /* up to 30 s */
        if (waitpid(g_worker, &st, WNOHANG) == g_worker) {
            g_worker = -1;
            if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
                die("the worker did not shut down cleanly (status %#x)", st);
            return;
        }
        usleep(20000);
    }
    die("the worker did not stop within 30 s of SIGTERM");
}

static void storm(uint8_t *buf, size_t cap, int conns, int msgs)
{
    uint64_t t0 = agile__now_ns();
    for (int c = 0; c < conns; c++) {
        nng_socket s;
        if (nng_connect(&s) != 0)
            die("storm: cannot dial");
        for (int i = 0; i < msgs; i++)
            roundtrip(s, buf, malformed(buf, cap), 1, "storm");
        nng_close(s);
        check_alive();
    }
    uint64_t t1 = agile__now_ns();
    probe(buf, cap, "the storm");
    printf("storm: %d connections x %d malformed messages: %.2f s, every one answered; "
           "a fresh client's token+HELLO+STATUS afterwards: %.1f ms\n",
           conns, msgs, (double)(t1 - t0) / 1e9, (double)(agile__now_ns() - t1) / 1e6);
}

int main(int argc, char **argv)
{
    const char *env = getenv("AGILE_FUZZ_SECONDS"), *worker = NULL;
    double seconds = env && *env ? atof(env) : 10;
    uint64_t seed = 0;
    int storm_conns = 0, storm_msgs = 0, hold = 0;
    static uint8_t buf[64 << 10];
    char self[PATH_MAX], wpath[PATH_MAX];

    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--seconds") && i + 1 < argc)
            seconds = atof(argv[++i]);
        else if (!strcmp(argv[i], "--seed") && i + 1 < argc)
            seed = strtoull(argv[++i], NULL, 0);
        else if (!strcmp(argv[i], "--storm") && i + 2 < argc) {
            storm_conns = atoi(argv[++i]);
            storm_msgs = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--hold") && i + 1 < argc)
            hold = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--runtime-dir") && i + 1 < argc)
            snprintf(g_dir, sizeof g_dir, "%s", argv[++i]);
        else if (!strcmp(argv[i], "--worker") && i + 1 < argc)
            worker = argv[++i];
        else {
            fprintf(stderr, "usage: worker_live_fuzz [--seconds N] [--seed S] [--storm CONNS "
                            "MSGS] [--hold CONNS] [--runtime-dir DIR] [--worker PATH]\n");
            return 2;
        }
    }
    signal(SIGPIPE, SIG_IGN);
    if (!seed && agile__random(&seed, sizeof seed) != AGILE_OK)
        seed = agile__now_ns();
    g_rng = seed ? seed : 1;
    printf("worker_live_fuzz: seed %llu, %.0f s\n", (unsigned long long)seed, seconds);
    fflush(stdout);
    if (!g_dir[0]) {
        if (!worker) {
            ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
            self[n > 0 ? n : 0] = 0;
            char *slash = strrchr(self, '/');
            if (slash)
                *slash = 0;
            snprintf(wpath, sizeof wpath, "%.*s/../bin/agile-worker", PATH_MAX - 32, self);
            worker = wpath;
        }
        start_worker(worker);
    }
    if (hold > 0) {
        nng_socket *held = calloc((size_t)hold, sizeof *held);
        char c;
        for (int i = 0; held && i < hold; i++)
            if (nng_connect(&held[i]) != 0)
                die("--hold: cannot dial connection %d", i);
        printf("holding\n");
        fflush(stdout);
        while (read(0, &c, 1) > 0)
            ;
        for (int i = 0; held && i < hold; i++)
            nng_close(held[i]);
        free(held);
        return 0;
    }
    probe(buf, sizeof buf, "start");
    if (storm_conns > 0) {
        storm(buf, sizeof buf, storm_conns, storm_msgs);
    } else {
        uint64_t end = agile__now_ns() + (uint64_t)(seconds * 1e9);
        while (agile__now_ns() < end) {
            int n = 1 + (int)below(12);
            for (int i = 0; i < n; i++) {
                switch (below(4)) {
                case 0: act_fd_churn(); break;
                case 1: act_unbound(buf, sizeof buf); break;
                default: act_session(buf, sizeof buf); break;
                }
            }
            g_bursts++;
            probe(buf, sizeof buf, "a burst");
        }
    }
    for (int i = 0; i < g_npending; i++)
        close(g_pending[i]);
    stop_worker();
    printf("worker_live_fuzz: %llu bursts, %llu requests, %llu replies, %llu probes (slowest "
           "%.1f ms): the worker stayed responsive\n",
           (unsigned long long)g_bursts, (unsigned long long)g_sent,
           (unsigned long long)g_replies, (unsigned long long)g_probes,
           (double)g_probe_max_ns / 1e6);
    return 0;
}
