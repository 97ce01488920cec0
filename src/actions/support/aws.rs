//! What the AWS clients (S3, Route 53) share: their configuration from a connection's fields, on
//! a rustls/ring HTTP client (never the SDK's default stack), and error classification.

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use serde_json::Value;

use super::error_chain;
use crate::actions::ActionError;

/// The AWS configuration a connection's fields give (`region`, `access_key_id`,
/// `secret_access_key`; the usual credential chain otherwise), on a rustls/ring HTTP client.
pub async fn sdk_config(fields: &Value) -> aws_config::SdkConfig {
    let get = |k: &str| fields.get(k).and_then(Value::as_str).map(String::from);
    use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let region = get("region").unwrap_or_else(|| "us-east-1".into());
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(http)
        .region(aws_config::Region::new(region));
    if let (Some(ak), Some(sk)) = (get("access_key_id"), get("secret_access_key")) {
        loader = loader.credentials_provider(aws_sdk_s3::config::Credentials::new(
            ak, sk, None, None, "lifeboat",
        ));
    }
    loader.load().await
}

/// No answer, a timeout, a 5xx or SlowDown may pass; a denial, a missing bucket or a failed
/// precondition will not.
pub fn classify<E: ProvideErrorMetadata + std::fmt::Debug, R: std::fmt::Debug>(
    e: &SdkError<E, R>,
    doing: &str,
) -> ActionError
where
    SdkError<E, R>: std::error::Error,
{
    match e {
        SdkError::ServiceError(se) => {
            let err = se.err();
            let code = err.code().unwrap_or("unknown");
            let msg = err.message().unwrap_or("");
            let text = format!(
                "{doing}: {code}{}{msg}",
                if msg.is_empty() { "" } else { ": " }
            );
            let transient = matches!(
                code,
                "SlowDown"
                    | "InternalError"
                    | "ServiceUnavailable"
                    | "RequestTimeout"
                    | "Throttling"
                    | "ThrottlingException"
                    // Route 53: the zone's previous change is still being applied.
                    | "PriorRequestNotComplete"
            );
            if transient {
                ActionError::transient(text)
            } else {
                ActionError::permanent(text)
            }
        }
        SdkError::ConstructionFailure(_) => {
            ActionError::permanent(format!("{doing}: {}", error_chain(e)))
        }
        _ => ActionError::transient(format!("{doing}: {}", error_chain(e))),
    }
}
