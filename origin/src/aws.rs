//! The AWS SDK's configuration: the standard chain (environment, profile,
//! container or instance role), with `AWS_ENDPOINT_URL` pointing it at a
//! local stand-in such as moto's server.

use std::time::Duration;

use aws_config::meta::region::RegionProviderChain;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};

/// Loads the SDK configuration. `attempt_timeout` bounds one API call and
/// must exceed the receive long poll.
pub async fn sdk_config(attempt_timeout: Duration) -> SdkConfig {
    let region = RegionProviderChain::default_provider().or_else(Region::new("us-east-1"));
    aws_config::defaults(BehaviorVersion::latest())
        .region(region)
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(3))
                .operation_attempt_timeout(attempt_timeout)
                .build(),
        )
        .load()
        .await
}
