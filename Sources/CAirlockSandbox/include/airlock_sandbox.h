#ifndef AIRLOCK_SANDBOX_H
#define AIRLOCK_SANDBOX_H

#include <stddef.h>
#include <sys/types.h>

/// Sends one message on a SOCK_SEQPACKET socket, with `fd` attached (SCM_RIGHTS) unless it is negative.
/// Returns the bytes sent, or -1 with errno set. Retries on EINTR.
ssize_t airlock_send_message(int socket, const void *buffer, size_t length, int fd);

/// Receives one message; `*fd` is the descriptor that came with it, or -1. Returns the bytes received (0 at end
/// of stream), or -1 with errno set. Retries on EINTR. Truncated messages fail with EMSGSIZE.
ssize_t airlock_receive_message(int socket, void *buffer, size_t length, int *fd);

/// Starts `path` with `argv` and `envp`, `socket` as its descriptor 3, /dev/null as standard input, standard
/// output and error inherited, and every other descriptor closed. Returns the pid, or -1 with errno set.
pid_t airlock_spawn_scanner(const char *path, char *const argv[], char *const envp[], int socket);

/// Writes back every dirty page and inode of the filesystem holding `fd` and waits for the disk (syncfs(2), which
/// Glibc declares only under _GNU_SOURCE). Returns 0, or -1 with errno set (a writeback error since the last call).
int airlock_syncfs(int fd);

/// Fills `buffer` with `length` random bytes from the kernel's generator (getrandom(2), declared in <sys/random.h>,
/// which the Glibc module does not bring in), retrying after a signal. Returns 0, or -1 with errno set.
int airlock_random_bytes(void *buffer, size_t length);

/// Closes every descriptor from `first` up.
void airlock_close_descriptors_from(int first);

/// The scanner dies with SIGKILL when the process that started it does. Returns 0, or -1 if the parent is
/// already gone (its pid is no longer `parent`).
int airlock_die_with_parent(pid_t parent);

/// Switches to `user` (its uid, gid, no supplementary groups). Returns 0, or -1 with errno set (ENOENT: no
/// such user).
int airlock_switch_user(const char *user, uid_t *uid);

/// Sets a resource limit (soft and hard). Returns 0, or -1 with errno set.
int airlock_limit(int resource, unsigned long long value);

/// Landlock: from now on this process may read and write beneath `scratch` only, read (never write) beneath
/// each of `readable`, make no TCP connection or bind, and signal no process outside its domain (where the
/// kernel's Landlock ABI knows these). Returns the ABI version enforced (>= 1), 0 when the kernel has no Landlock,
/// or -1 with errno set.
int airlock_landlock(const char *scratch, char *const readable[], int readable_count);

/// Sets PR_SET_NO_NEW_PRIVS and installs the seccomp filter: no new sockets (socket, socketpair, connect, bind,
/// listen, accept), no execve/execveat, no ptrace or process_vm_*, no namespaces or mounts, no io_uring, no
/// kernel keyring, bpf or perf. Denied calls fail with EPERM. Returns 0, or -1 with errno set.
int airlock_seccomp(void);

/// Confinement self-test: tries to open `path` for reading, to connect to 127.0.0.1:`port` over TCP, and to
/// execute `program` (in a forked child). Each result is 0 when the action succeeded, or the errno that stopped it.
void airlock_probe(const char *path, int port, const char *program, int *open_result, int *connect_result, int *exec_result);

#endif
