// Package scheduler runs pipelines on their schedules.
//
// Words:
//   - Tick: an instant a pipeline's schedule fires (pipeline.Schedule.Next).
//   - Processed: a tick whose run was created, or that was skipped on
//     purpose. The last processed tick of each pipeline is durable (the
//     history's ticks bucket) and is recorded in the same transaction as
//     the run it starts, so a tick never runs twice: not after a crash, not
//     with two schedulers on one history.
//   - Missed: a tick that fell due while no scheduler was running; the
//     schedule's catchup policy (none, latest, all) and catchup_window
//     decide which of them run when the scheduler comes back.
//   - Overlap: a tick that falls due while max_active_runs runs of its
//     pipeline are active; the overlap policy (skip, queue, cancel) decides.
//
// One coordinator goroutine owns all state; runs report back on a channel.
// Time comes from Options.Now and timers, so tests drive it with
// testing/synctest.
package scheduler
