// The expansion names only absolute paths: shadowing common names breaks nothing.
#![allow(dead_code, non_camel_case_types)]

use processhub::prelude::*;

type Result = ();
type Option = ();
struct Box;
struct Vec;
struct Send;
struct Clone;
mod core {}
mod std {}
// processhub's own names, shadowing the prelude's.
struct Hub;
struct CallError;
struct StartError;
struct StopError;
struct NodeId;
struct StartOptions;

#[distributed]
#[derive(Default, Serialize, Deserialize)]
pub struct Shadowed {
    n: u64,
}

#[distributed]
impl Shadowed {
    pub fn get(&self) -> u64 {
        self.n
    }
}

fn main() {}
