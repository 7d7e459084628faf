//! `failsoft notifications`: a consumer of the Genesys Cloud Notification
//! Service. It takes an OAuth client-credentials token ([`token`]) and
//! creates and subscribes a channel ([`channel`]).

pub mod channel;
pub mod genesys_error;
pub mod settings;
pub mod token;

pub use settings::NotificationSettings;

pub const TOKENS: &str = "failsoft_notifications_tokens_total";
