/**
 * The libc functions veilnet-conflux calls, as pure data (the shape `Deno.dlopen` wants), with each parameter's C
 * type beside it. Only ffi/loader.ts opens the library.
 *
 * Calls marked `nonblocking` run on a worker thread and return a Promise (about 50 µs each): only `poll`, which
 * waits. Everything else is a synchronous call on the JavaScript thread (about 0.4 µs).
 * @module
 */

export const LIBC_SYMBOLS = {
  /** int open(const char *pathname, int flags, mode_t mode) */
  open: {
    parameters: ["buffer", /* const char *pathname */ "i32", /* int flags */ "u32" /* mode_t mode */],
    result: "i32",
  },
  /** int close(int fd) */
  close: { parameters: ["i32" /* int fd */], result: "i32" },
  /** ssize_t read(int fd, void *buf, size_t count) */
  read: {
    parameters: ["i32", /* int fd */ "buffer", /* void *buf */ "usize" /* size_t count */],
    result: "isize",
  },
  /** ssize_t write(int fd, const void *buf, size_t count) */
  write: {
    parameters: ["i32", /* int fd */ "buffer", /* const void *buf */ "usize" /* size_t count */],
    result: "isize",
  },
  /** int ioctl(int fd, unsigned long request, void *argp): the variadic third argument is always a pointer here */
  ioctl: {
    parameters: ["i32", /* int fd */ "u64", /* unsigned long request */ "buffer" /* void *argp */],
    result: "i32",
  },
  /** ioctl with an integer third argument (TUNSETOFFLOAD takes its flags by value) */
  ioctlValue: {
    name: "ioctl",
    parameters: ["i32", /* int fd */ "u64", /* unsigned long request */ "u64" /* unsigned long arg */],
    result: "i32",
  },
  /** int poll(struct pollfd *fds, nfds_t nfds, int timeout): waits, so it runs off the JavaScript thread */
  poll: {
    parameters: ["buffer", /* struct pollfd *fds */ "u64", /* nfds_t nfds */ "i32" /* int timeout (ms) */],
    result: "i32",
    nonblocking: true,
  },
  /** int socket(int domain, int type, int protocol) */
  socket: {
    parameters: ["i32", /* int domain */ "i32", /* int type */ "i32" /* int protocol */],
    result: "i32",
  },
  /** int sched_yield(void): lets another runnable thread have this CPU (the data-plane worker's busy wait) */
  sched_yield: { parameters: [], result: "i32" },
  /** poll on the calling thread: for a thread (the data-plane worker) whose job is to wait here */
  pollSync: {
    name: "poll",
    parameters: ["buffer", /* struct pollfd *fds */ "u64", /* nfds_t nfds */ "i32" /* int timeout (ms) */],
    result: "i32",
  },
  /** int bind(int fd, const struct sockaddr *addr, socklen_t len) */
  bind: {
    parameters: ["i32", /* int fd */ "buffer", /* const struct sockaddr *addr */ "u32"],
    result: "i32",
  },
  /** int listen(int fd, int backlog) */
  listen: { parameters: ["i32", /* int fd */ "i32" /* int backlog */], result: "i32" },
  /** int accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags) */
  accept4: {
    parameters: ["i32", /* int fd */ "pointer", /* struct sockaddr *addr */ "pointer", "i32" /* int flags */],
    result: "i32",
  },
  /** int connect(int fd, const struct sockaddr *addr, socklen_t len) */
  connect: {
    parameters: ["i32", /* int fd */ "buffer", /* const struct sockaddr *addr */ "u32"],
    result: "i32",
  },
  /** int getsockname(int fd, struct sockaddr *addr, socklen_t *len) */
  getsockname: {
    parameters: ["i32", /* int fd */ "buffer", /* addr */ "buffer" /* socklen_t *len */],
    result: "i32",
  },
  /** int getsockopt(int fd, int level, int name, void *value, socklen_t *len) */
  getsockopt: {
    parameters: ["i32", /* int fd */ "i32", /* int level */ "i32", /* int name */ "buffer", "buffer"],
    result: "i32",
  },
  /** int setsockopt(int fd, int level, int name, const void *value, socklen_t len) */
  setsockopt: {
    parameters: ["i32", /* int fd */ "i32", /* int level */ "i32", /* int name */ "buffer", "u32"],
    result: "i32",
  },
  /** int socketpair(int domain, int type, int protocol, int sv[2]) */
  socketpair: {
    parameters: [
      "i32",
      /* int domain */ "i32",
      /* int type */ "i32",
      /* int protocol */ "buffer", /* int sv[2] */
    ],
    result: "i32",
  },
  /** ssize_t send(int fd, const void *buf, size_t len, int flags): with MSG_NOSIGNAL, never SIGPIPE */
  send: {
    parameters: ["i32", /* int fd */ "buffer", /* const void *buf */ "usize", /* size_t len */ "i32"],
    result: "isize",
  },
  /** int eventfd(unsigned int initval, int flags) */
  eventfd: { parameters: ["u32", /* unsigned int initval */ "i32" /* int flags */], result: "i32" },
  /** int setns(int fd, int nstype): moves the calling thread into another namespace */
  setns: { parameters: ["i32", /* int fd */ "i32" /* int nstype */], result: "i32" },
  /** unsigned int if_nametoindex(const char *ifname) */
  if_nametoindex: { parameters: ["buffer" /* const char *ifname */], result: "u32" },
  /** int *__errno_location(void): the calling thread's errno (glibc and musl) */
  __errno_location: { parameters: [], result: "pointer" },
  /** int clock_gettime(clockid_t clockid, struct timespec *tp) */
  clock_gettime: {
    parameters: ["i32", /* clockid_t clockid */ "buffer" /* struct timespec *tp */],
    result: "i32",
  },
  /** char *strerror(int errnum) */
  strerror: { parameters: ["i32" /* int errnum */], result: "pointer" },
  /** int madvise(void *addr, size_t length, int advice): the address as an integer (ffi/pages.ts reads it from smaps) */
  madvise: {
    parameters: ["usize", /* void *addr */ "usize", /* size_t length */ "i32" /* int advice */],
    result: "i32",
  },
  /** int malloc_trim(size_t pad): gives the allocator's free memory back to the system (glibc; musl has none) */
  malloc_trim: { parameters: ["usize" /* size_t pad */], result: "i32", optional: true },
} as const satisfies Deno.ForeignLibraryInterface;

/** Linux constants used with the calls above (identical on x86_64 and aarch64). */
export const LINUX = {
  O_RDONLY: 0,
  O_WRONLY: 1,
  O_RDWR: 2,
  O_NONBLOCK: 0x800,
  O_CLOEXEC: 0x80000,
  AF_UNIX: 1,
  AF_INET: 2,
  AF_INET6: 10,
  AF_NETLINK: 16,
  SOCK_STREAM: 1,
  SOCK_DGRAM: 2,
  SOCK_RAW: 3,
  SOCK_SEQPACKET: 5,
  SOCK_NONBLOCK: 0x800,
  SOCK_CLOEXEC: 0x80000,
  SOL_SOCKET: 1,
  SO_ERROR: 4,
  SO_REUSEADDR: 2,
  IPPROTO_TCP: 6,
  TCP_NODELAY: 1,
  TIOCOUTQ: 0x5411,
  MSG_NOSIGNAL: 0x4000,
  EFD_NONBLOCK: 0x800,
  CLOCK_MONOTONIC: 1,
  EFD_CLOEXEC: 0x80000,
  POLLIN: 0x1,
  POLLOUT: 0x4,
  POLLERR: 0x8,
  POLLHUP: 0x10,
  POLLNVAL: 0x20,
  CLONE_NEWNET: 0x40000000,
  // errno values
  EPERM: 1,
  ENOENT: 2,
  EINTR: 4,
  EBADF: 9,
  EAGAIN: 11,
  EACCES: 13,
  EBUSY: 16,
  EEXIST: 17,
  ENODEV: 19,
  EINVAL: 22,
  EPIPE: 32,
  EINPROGRESS: 115,
  EAFNOSUPPORT: 97,
  EADDRNOTAVAIL: 99,
  // <linux/if_tun.h>
  TUNSETIFF: 0x400454can,
  TUNSETOFFLOAD: 0x400454d0n,
  IFF_TUN: 0x0001,
  IFF_NO_PI: 0x1000,
  IFF_VNET_HDR: 0x4000,
  TUN_F_CSUM: 0x01,
  TUN_F_TSO4: 0x02,
  TUN_F_TSO6: 0x04,
  // <linux/sockios.h>
  SIOCGIFFLAGS: 0x8913n,
  SIOCSIFFLAGS: 0x8914n,
  SIOCSIFADDR: 0x8916n,
  SIOCSIFNETMASK: 0x891cn,
  SIOCSIFMTU: 0x8922n,
  // <linux/netlink.h>, <linux/rtnetlink.h>, <linux/if_addr.h>
  NETLINK_ROUTE: 0,
  NLMSG_ERROR: 2,
  RTM_NEWLINK: 16,
  RTM_NEWADDR: 20,
  IFLA_GSO_MAX_SIZE: 41,
  NLM_F_REQUEST: 0x1,
  NLM_F_ACK: 0x4,
  NLM_F_EXCL: 0x200,
  NLM_F_CREATE: 0x400,
  IFA_ADDRESS: 1,
  IFA_LOCAL: 2,
  IFA_F_NODAD: 0x02,
  // <net/if.h>
  IFF_UP: 0x1,
  IFNAMSIZ: 16,
} as const;
