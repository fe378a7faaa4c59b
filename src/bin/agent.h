/* kiro-rt agent's common case, served in C before any Lua state exists
 * (agent.c). */
#ifndef KIRO_AGENT_H
#define KIRO_AGENT_H

/* Serves `kiro-rt agent ARGS` when it is a plain -m prompt for a running
 * server of this version: returns the exit status. Returns -1, having sent
 * nothing, for every other call (lua/kiro/cli.lua serves it). */
int kiro_agent_fast(int argc, char **argv);

#endif
