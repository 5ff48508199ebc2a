// Host operations the spawn broker does in its forked child, with no exec (host-ops.c).
#pragma once

/** The prefix of a CMD that names a host operation rather than a tool. */
#define HOST_OP_PREFIX "cove:"

/** Whether CMD names a host operation (HOST_OP_PREFIX and a name). */
int is_host_op(const char *cmd);

/** Runs the host operation CMD with ARGS (NULL-terminated); returns the exit status. Called in the forked child. */
int run_host_op(const char *cmd, char **args);
