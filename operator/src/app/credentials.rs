//! An app's key and secret: read from a Secret the user owns (never written), or generated
//! once into a Secret the operator owns (never overwritten).

use herald_crds::contract::credentials::{
    self, APP_ID as CREDENTIALS_APP_ID, KEY as CREDENTIALS_KEY, SECRET as CREDENTIALS_SECRET,
};
use herald_crds::PusherApp;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use kube::{Api, ResourceExt};
use serde_json::json;

use super::{generated_secret_name, new_app_id};
use crate::apply::Applier;
use crate::labels::{self, Component};
use crate::{Context, Error, Result};

/// What resolving credentials came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// Usable credentials.
    Ok {
        /// The public key.
        key: String,
        /// App id stored in a generated Secret, if any.
        app_id: Option<String>,
        /// Whether the operator generated them.
        generated: bool,
        /// The Secret's name.
        secret: String,
    },
    /// Unusable; `reason` is a condition reason and `message` says what to fix.
    Failed {
        /// CamelCase reason.
        reason: &'static str,
        /// What to fix.
        message: String,
    },
}

impl Resolved {
    /// Condition reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Resolved::Ok { generated: true, .. } => "Generated",
            Resolved::Ok { generated: false, .. } => "SecretFound",
            Resolved::Failed { reason, .. } => reason,
        }
    }

    /// Condition message.
    pub fn message(&self) -> String {
        match self {
            Resolved::Ok { generated: true, secret, .. } => {
                format!(
                    "key and secret generated into Secret {secret} (owned by this app, never overwritten)"
                )
            }
            Resolved::Ok { generated: false, secret, .. } => {
                format!("key and secret read from Secret {secret} (yours; the operator never writes it)")
            }
            Resolved::Failed { message, .. } => message.clone(),
        }
    }

    /// The public key, when resolved.
    pub fn key(&self) -> Option<&str> {
        match self {
            Resolved::Ok { key, .. } => Some(key),
            Resolved::Failed { .. } => None,
        }
    }

    /// The app id a generated Secret records.
    pub fn app_id(&self) -> Option<&str> {
        match self {
            Resolved::Ok { app_id, .. } => app_id.as_deref(),
            Resolved::Failed { .. } => None,
        }
    }
}

/// Checks one credential value: present, UTF-8, no whitespace, not empty (the contract's rule,
/// the same the server pods apply).
pub fn check_value(secret: &Secret, key: &str) -> std::result::Result<String, String> {
    let data = secret.data.as_ref().and_then(|d| d.get(key)).map(|v| v.0.as_slice());
    credentials::value(&secret.name_any(), data, key)
}

/// Resolves the credentials of `app`; generates them (and an app id not in `taken`) when the
/// app names no Secret.
pub async fn resolve(
    app: &PusherApp,
    applier: &Applier,
    ctx: &Context,
    taken: &[String],
) -> Result<Resolved> {
    let namespace = applier.namespace();
    match &app.spec.credentials {
        Some(creds) => {
            let r = &creds.secret_ref;
            let secret = Api::<Secret>::namespaced(ctx.client.clone(), namespace).get_opt(&r.name).await?;
            let Some(secret) = secret else {
                return Ok(Resolved::Failed {
                    reason: "SecretNotFound",
                    message: format!(
                        "Secret {namespace}/{} does not exist: create it with keys {:?} and {:?}",
                        r.name,
                        r.key_key(),
                        r.secret_key()
                    ),
                });
            };
            if !credentials::opted_in(secret.metadata.labels.as_ref()) {
                // Nothing of it is read, so nothing of it can reach status, Events or logs.
                return Ok(Resolved::Failed {
                    reason: "SecretNotOptedIn",
                    message: format!(
                        "Secret {namespace}/{} is not labelled {}=true; Herald reads only Secrets that opt in: kubectl label secret -n {namespace} {} {}=true",
                        r.name,
                        credentials::OPT_IN_LABEL,
                        r.name,
                        credentials::OPT_IN_LABEL
                    ),
                });
            }
            let key = check_value(&secret, r.key_key());
            let secret_value = check_value(&secret, r.secret_key());
            match (key, secret_value) {
                (Ok(key), Ok(_)) => {
                    Ok(Resolved::Ok { key, app_id: None, generated: false, secret: r.name.clone() })
                }
                (Err(message), _) | (_, Err(message)) => {
                    Ok(Resolved::Failed { reason: "SecretInvalid", message })
                }
            }
        }
        None => {
            let name = generated_secret_name(&app.name_any());
            let app_id = app.spec.app_id.clone().unwrap_or_else(|| new_app_id(taken));
            let stored = applier.create_once(generated_secret(app, &name, &app_id)?).await?;
            let ours = stored.owner_references().iter().any(|o| o.uid == applier.owner().uid);
            if !ours {
                return Ok(Resolved::Failed {
                    reason: "SecretConflict",
                    message: format!(
                        "Secret {namespace}/{name} exists and does not belong to this app: rename it, or name it in spec.credentials.secretRef"
                    ),
                });
            }
            match (check_value(&stored, CREDENTIALS_KEY), check_value(&stored, CREDENTIALS_SECRET)) {
                (Ok(key), Ok(_)) => Ok(Resolved::Ok {
                    key,
                    app_id: check_value(&stored, CREDENTIALS_APP_ID).ok(),
                    generated: true,
                    secret: name,
                }),
                (Err(message), _) | (_, Err(message)) => Ok(Resolved::Failed {
                    reason: "SecretInvalid",
                    message: format!("{message}; delete the Secret to have new credentials generated"),
                }),
            }
        }
    }
}

/// A Secret with fresh credentials: a 20-character hex key (like Pusher's) and a 32-character
/// hex secret, plus the app id.
pub fn generated_secret(app: &PusherApp, name: &str, app_id: &str) -> Result<Secret> {
    let key = hex::encode(rand::random::<[u8; 10]>());
    let secret = hex::encode(rand::random::<[u8; 16]>());
    let mut labels = labels::standard(&app.spec.cluster_ref, Component::App);
    labels.insert(labels::GENERATED.into(), "true".into());
    labels.insert("herald.dev/app".into(), app.name_any());
    serde_json::from_value(json!({
        "metadata": { "name": name, "labels": labels },
        "type": "Opaque",
        "data": {
            CREDENTIALS_KEY: ByteString(key.into_bytes()),
            CREDENTIALS_SECRET: ByteString(secret.into_bytes()),
            CREDENTIALS_APP_ID: ByteString(app_id.as_bytes().to_vec())
        }
    }))
    .map_err(|source| Error::Serialize { what: "Secret", source })
}
