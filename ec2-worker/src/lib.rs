//! What other crates take from the worker package: the EC2 bootstrap that `pixq ec2 launch`
//! sends as user-data. The worker daemon itself is the `pixq-worker` binary (`main.rs`).

/// The body of the EC2 user-data: the launcher puts a block of quoted settings above it.
/// See `user-data.sh` for what it does on the instance.
pub const USER_DATA: &str = include_str!("../user-data.sh");
