/*
 * rworker.h -- `weft worker`: serving a Redis executor's queue (rworker_*).
 *
 * The worker reads task entries from the stream weft:<queue>:tasks through
 * the consumer group "weft" and runs them in a local pool (processes, or
 * threads), which enforces each task's deadline.  Three threads:
 *
 *   - the owner's (the Lua state's): verifies and submits the entries the
 *     fetcher hands in, runs the local futures' callbacks and writes the
 *     results: once per task (SET NX, with the client's TTL), pushed to
 *     the client's list, then the entry is acknowledged and deleted, all
 *     in one script, so a result is stored before its entry goes;
 *   - the fetcher: XREADGROUP while the worker has room, and every
 *     claim_idle / 2 the entries idle for claim_idle seconds (their worker
 *     died) are claimed; an entry delivered more than max_deliveries times
 *     goes to the dead-letter stream and its task fails with kind
 *     worker_died;
 *   - the heartbeat: every `heartbeat` seconds, resets the idle time of
 *     every entry this worker holds (so a long task is never claimed by
 *     others), looks for kill marks of forced cancels, and registers the
 *     worker in weft:<queue>:workers.
 *
 * Each thread has its own connection and reconnects with back-off.  Entries
 * that fail their signature check or cannot be parsed are refused: logged,
 * moved to the dead-letter stream, never run.  SIGTERM (or SIGINT) stops
 * the fetching; the running tasks finish and their results are written.
 */
#ifndef WEFT_RWORKER_H
#define WEFT_RWORKER_H

#include <lua.h>

/* core.redis_serve(executor, opts) -> exit status; opts: url, queue,
 * secret, heartbeat, claim_idle, name, prefetch, what ("2 processes"). */
int rworker_serve(lua_State *L);

#endif
