//! How other processes tell that a run's process is alive: its heartbeat
//! in the store, and on this machine the lock file it holds.

pub mod heartbeat;
pub mod lock;
