// The scanner process's confinement and descriptor passing: the parts of the kernel's API that Swift cannot call
// (variadic prctl/syscall, CMSG_* macros, BPF_* macros).
#define _GNU_SOURCE
#include "airlock_sandbox.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <pwd.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

ssize_t airlock_send_message(int socket, const void *buffer, size_t length, int fd) {
    struct iovec vector = {.iov_base = (void *)buffer, .iov_len = length};
    union {
        char bytes[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } control;
    struct msghdr message = {.msg_iov = &vector, .msg_iovlen = 1};
    if (fd >= 0) {
        memset(&control, 0, sizeof(control));
        message.msg_control = control.bytes;
        message.msg_controllen = sizeof(control.bytes);
        struct cmsghdr *header = CMSG_FIRSTHDR(&message);
        header->cmsg_level = SOL_SOCKET;
        header->cmsg_type = SCM_RIGHTS;
        header->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(header), &fd, sizeof(int));
    }
    ssize_t sent;
    do {
        sent = sendmsg(socket, &message, MSG_NOSIGNAL);
    } while (sent < 0 && errno == EINTR);
    return sent;
}

ssize_t airlock_receive_message(int socket, void *buffer, size_t length, int *fd) {
    struct iovec vector = {.iov_base = buffer, .iov_len = length};
    union {
        char bytes[CMSG_SPACE(sizeof(int) * 4)];
        struct cmsghdr align;
    } control;
    struct msghdr message = {.msg_iov = &vector, .msg_iovlen = 1, .msg_control = control.bytes, .msg_controllen = sizeof(control.bytes)};
    *fd = -1;
    ssize_t received;
    do {
        received = recvmsg(socket, &message, MSG_CMSG_CLOEXEC);
    } while (received < 0 && errno == EINTR);
    if (received < 0) return received;
    for (struct cmsghdr *header = CMSG_FIRSTHDR(&message); header != NULL; header = CMSG_NXTHDR(&message, header)) {
        if (header->cmsg_level == SOL_SOCKET && header->cmsg_type == SCM_RIGHTS) {
            size_t count = (header->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            int received_fds[4];
            memcpy(received_fds, CMSG_DATA(header), count * sizeof(int));
            for (size_t index = 0; index < count; index++) {
                if (*fd < 0) *fd = received_fds[index];
                else close(received_fds[index]);
            }
        }
    }
    if (message.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) {
        if (*fd >= 0) close(*fd);
        *fd = -1;
        errno = EMSGSIZE;
        return -1;
    }
    return received;
}

pid_t airlock_spawn_scanner(const char *path, char *const argv[], char *const envp[], int socket) {
    posix_spawn_file_actions_t actions;
    if (posix_spawn_file_actions_init(&actions) != 0) return -1;
    int status = posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    if (status == 0) status = posix_spawn_file_actions_adddup2(&actions, socket, 3);
    if (status == 0) status = posix_spawn_file_actions_addclosefrom_np(&actions, 4);
    pid_t pid = -1;
    if (status == 0) status = posix_spawn(&pid, path, &actions, NULL, argv, envp);
    posix_spawn_file_actions_destroy(&actions);
    if (status != 0) {
        errno = status;
        return -1;
    }
    return pid;
}

void airlock_close_descriptors_from(int first) {
    if (syscall(SYS_close_range, (unsigned)first, ~0U, 0) == 0) return;
    for (int fd = first; fd < 65536; fd++) close(fd);
}

int airlock_die_with_parent(pid_t parent) {
    if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0) return -1;
    return getppid() == parent ? 0 : -1;
}

int airlock_switch_user(const char *user, uid_t *uid) {
    errno = 0;
    struct passwd *entry = getpwnam(user);
    if (entry == NULL) {
        if (errno == 0) errno = ENOENT;
        return -1;
    }
    if (setgroups(0, NULL) != 0) return -1;
    if (setresgid(entry->pw_gid, entry->pw_gid, entry->pw_gid) != 0) return -1;
    if (setresuid(entry->pw_uid, entry->pw_uid, entry->pw_uid) != 0) return -1;
    // No way back.
    if (entry->pw_uid != 0 && setuid(0) == 0) {
        errno = EPERM;
        return -1;
    }
    *uid = entry->pw_uid;
    return 0;
}

int airlock_limit(int resource, unsigned long long value) {
    struct rlimit limit = {.rlim_cur = value, .rlim_max = value};
    return setrlimit(resource, &limit);
}

// Landlock's interface, written out so that older kernel headers do not matter (the layout is stable: the kernel
// reads the fields the size covers).
struct airlock_landlock_ruleset_attr {
    uint64_t handled_access_fs;
    uint64_t handled_access_net;
    uint64_t scoped;
};
struct airlock_landlock_path_beneath_attr {
    uint64_t allowed_access;
    int32_t parent_fd;
} __attribute__((packed));

#define AIRLOCK_LANDLOCK_CREATE_RULESET_VERSION (1U << 0)
#define AIRLOCK_LANDLOCK_RULE_PATH_BENEATH 1
#define FS_EXECUTE (1ULL << 0)
#define FS_WRITE_FILE (1ULL << 1)
#define FS_READ_FILE (1ULL << 2)
#define FS_READ_DIR (1ULL << 3)
#define FS_REMOVE_DIR (1ULL << 4)
#define FS_REMOVE_FILE (1ULL << 5)
#define FS_MAKE_CHAR (1ULL << 6)
#define FS_MAKE_DIR (1ULL << 7)
#define FS_MAKE_REG (1ULL << 8)
#define FS_MAKE_SOCK (1ULL << 9)
#define FS_MAKE_FIFO (1ULL << 10)
#define FS_MAKE_BLOCK (1ULL << 11)
#define FS_MAKE_SYM (1ULL << 12)
#define FS_REFER (1ULL << 13)
#define FS_TRUNCATE (1ULL << 14)
#define FS_IOCTL_DEV (1ULL << 15)
#define NET_BIND_TCP (1ULL << 0)
#define NET_CONNECT_TCP (1ULL << 1)
#define SCOPE_ABSTRACT_UNIX_SOCKET (1ULL << 0)
#define SCOPE_SIGNAL (1ULL << 1)

static int add_path_rule(int ruleset, const char *path, uint64_t access, uint64_t handled) {
    int fd = open(path, O_PATH | O_CLOEXEC);
    // A path that does not exist, or that this user may not reach (a signature directory only root reads: the
    // engine was compiled before the switch), gets no rule: Landlock then denies it too.
    if (fd < 0) return (errno == ENOENT || errno == EACCES) ? 0 : -1;
    struct airlock_landlock_path_beneath_attr rule = {.allowed_access = access & handled, .parent_fd = fd};
    // A regular file takes only file rights.
    struct stat info;
    if (fstat(fd, &info) == 0 && !S_ISDIR(info.st_mode)) {
        rule.allowed_access &= FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | FS_TRUNCATE | FS_IOCTL_DEV;
    }
    long status = syscall(SYS_landlock_add_rule, ruleset, AIRLOCK_LANDLOCK_RULE_PATH_BENEATH, &rule, 0);
    int saved = errno;
    close(fd);
    errno = saved;
    return status == 0 ? 0 : -1;
}

int airlock_landlock(const char *scratch, char *const readable[], int readable_count) {
    long abi = syscall(SYS_landlock_create_ruleset, NULL, 0, AIRLOCK_LANDLOCK_CREATE_RULESET_VERSION);
    if (abi < 0) return (errno == ENOSYS || errno == EOPNOTSUPP) ? 0 : -1;
    struct airlock_landlock_ruleset_attr attributes = {0};
    attributes.handled_access_fs = (FS_MAKE_SYM << 1) - 1;  // ABI 1: bits 0-12
    if (abi >= 2) attributes.handled_access_fs |= FS_REFER;
    if (abi >= 3) attributes.handled_access_fs |= FS_TRUNCATE;
    if (abi >= 5) attributes.handled_access_fs |= FS_IOCTL_DEV;
    size_t size = offsetof(struct airlock_landlock_ruleset_attr, handled_access_net);
    if (abi >= 4) {
        attributes.handled_access_net = NET_BIND_TCP | NET_CONNECT_TCP;
        size = offsetof(struct airlock_landlock_ruleset_attr, scoped);
    }
    if (abi >= 6) {
        attributes.scoped = SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL;
        size = sizeof(attributes);
    }
    // Landlock, like seccomp, needs no-new-privileges from a process without CAP_SYS_ADMIN.
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return -1;
    int ruleset = (int)syscall(SYS_landlock_create_ruleset, &attributes, size, 0);
    if (ruleset < 0) return -1;
    uint64_t handled = attributes.handled_access_fs;
    uint64_t read_only = FS_READ_FILE | FS_READ_DIR;
    uint64_t read_write = read_only | FS_WRITE_FILE | FS_REMOVE_DIR | FS_REMOVE_FILE | FS_MAKE_DIR | FS_MAKE_REG | FS_TRUNCATE;
    int status = add_path_rule(ruleset, scratch, read_write, handled);
    for (int index = 0; status == 0 && index < readable_count; index++) {
        status = add_path_rule(ruleset, readable[index], read_only, handled);
    }
    if (status == 0) status = (int)syscall(SYS_landlock_restrict_self, ruleset, 0);
    int saved = errno;
    close(ruleset);
    errno = saved;
    return status == 0 ? (int)abi : -1;
}

#if defined(__x86_64__)
#define AIRLOCK_AUDIT_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define AIRLOCK_AUDIT_ARCH AUDIT_ARCH_AARCH64
#else
#error "seccomp filter: unsupported architecture"
#endif

#define DENY(call) BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_##call, 0, 1), BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM)

int airlock_seccomp(void) {
    const uint32_t namespaces = CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWCGROUP;
    struct sock_filter filter[] = {
        // A foreign architecture's system call numbers mean other calls: kill.
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AIRLOCK_AUDIT_ARCH, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
#if defined(__x86_64__)
        // The x32 ABI shares the architecture value: refuse its calls.
        BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, 0x40000000, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
#endif
        DENY(socket), DENY(socketpair), DENY(connect), DENY(bind), DENY(listen), DENY(accept), DENY(accept4),
        DENY(execve), DENY(execveat), DENY(ptrace), DENY(process_vm_readv), DENY(process_vm_writev),
        DENY(unshare), DENY(setns), DENY(mount), DENY(umount2), DENY(pivot_root), DENY(chroot),
        DENY(io_uring_setup), DENY(io_uring_enter), DENY(io_uring_register), DENY(bpf), DENY(perf_event_open),
        DENY(keyctl), DENY(add_key), DENY(request_key), DENY(userfaultfd), DENY(init_module), DENY(finit_module),
        DENY(delete_module), DENY(kexec_load), DENY(open_by_handle_at), DENY(name_to_handle_at), DENY(setuid),
        DENY(setgid), DENY(setreuid), DENY(setregid), DENY(setresuid), DENY(setresgid), DENY(setgroups),
        // clone3 hides its flags in memory: make glibc fall back to clone, whose flags are checked below.
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_clone3, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_clone, 0, 3),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[0])),
        BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, namespaces, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog program = {.len = (unsigned short)(sizeof(filter) / sizeof(filter[0])), .filter = filter};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return -1;
    if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &program, 0, 0) != 0) return -1;
    return 0;
}

void airlock_probe(const char *path, int port, const char *program, int *open_result, int *connect_result, int *exec_result) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        *open_result = 0;
        close(fd);
    } else {
        *open_result = errno;
    }

    int sock = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (sock < 0) {
        *connect_result = errno;
    } else {
        struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
        address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        *connect_result = connect(sock, (struct sockaddr *)&address, sizeof(address)) == 0 ? 0 : errno;
        close(sock);
    }

    // In a child, so that a successful exec replaces the child, not the scanner. The child reports execve's errno
    // as its exit status; an exec that worked ends with the program's own status, reported as 0.
    pid_t child = fork();
    if (child == 0) {
        char *const argv[] = {(char *)program, NULL};
        char *const envp[] = {NULL};
        execve(program, argv, envp);
        _exit(errno == 0 ? 255 : errno);
    }
    if (child < 0) {
        *exec_result = errno;
        return;
    }
    int status = 0;
    while (waitpid(child, &status, 0) < 0 && errno == EINTR) {
    }
    *exec_result = (WIFEXITED(status) && WEXITSTATUS(status) != 0 && WEXITSTATUS(status) != 255) ? WEXITSTATUS(status) : 0;
}

int airlock_syncfs(int fd) {
    return syncfs(fd);
}

int airlock_random_bytes(void *buffer, size_t length) {
    size_t filled = 0;
    while (filled < length) {
        ssize_t count = getrandom((char *)buffer + filled, length - filled, 0);
        if (count < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        filled += (size_t)count;
    }
    return 0;
}
