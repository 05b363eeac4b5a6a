//! What pullpass knows about registry providers, shared by the two modules
//! that need it: `credentials/` (checking a credential when it is stored)
//! and `upstream/` (using it in an exchange).
//!
//! * [`google_key`]: Google service-account JSON keys.
//! * [`ecr`]: Amazon ECR registry hosts and their regions.
//! * [`cloud_hosts`]: ACR's and Google's registry hosts, where federated
//!   tokens may go.
//!
//! It sits below both, so neither imports the other. It knows nothing of
//! SQL, gRPC, HTTP or the store.

pub mod cloud_hosts;
pub mod ecr;
pub mod google_key;
