//! What a training run is doing right now, shared with the web page of `cvae train
//! --serve` in the same process (the run folder holds only complete epochs).

use std::sync::Mutex;

use serde::Serialize;

/// A training run's progress inside the current epoch.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Progress {
    pub epoch: u32,
    pub epochs: u32,
    /// Images of this epoch done, of `epoch_images`.
    pub images: usize,
    pub epoch_images: usize,
    pub images_per_second: f64,
    /// Seconds until the last epoch ends, at this speed (evaluations aside).
    pub eta_seconds: f64,
    /// False once training has stopped (finished, failed or interrupted).
    pub running: bool,
}

#[derive(Debug, Default)]
pub struct Live(Mutex<Progress>);

impl Live {
    pub fn set(&self, p: Progress) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = p;
    }
    pub fn get(&self) -> Progress {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
    /// Mark training as stopped, keeping the last figures.
    pub fn stop(&self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).running = false;
    }
}
