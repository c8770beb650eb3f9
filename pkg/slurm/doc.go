// Package slurm talks to a Slurm cluster through its command-line tools:
// sbatch --parsable to submit, one `squeue --json` per poll for every job
// at once, `scontrol show job -o` for a job squeue no longer lists, scancel.
//
// Words:
//   - Job: a batch job, named by its Slurm job ID (a decimal string).
//   - State: Slurm's job state (PENDING, RUNNING, COMPLETED, FAILED,
//     TIMEOUT, OUT_OF_MEMORY, NODE_FAIL, CANCELLED, PREEMPTED, ...).
//   - Info: a job's state with its exit code and reason, as last seen.
package slurm
