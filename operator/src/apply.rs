//! Server-side apply with one field manager per controller. Every object gets the owner
//! reference of the custom resource it belongs to, so deleting that resource deletes it, and
//! `.owns()` watches bring drift back here.

use std::fmt::Debug;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::NamespaceResourceScope;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{Error, Result};

/// Field manager of the PusherCluster controller.
pub const CLUSTER_MANAGER: &str = "herald-operator/cluster";
/// Field manager of the PusherApp controller.
pub const APP_MANAGER: &str = "herald-operator/app";

/// Writes the objects of one custom resource in its namespace.
pub struct Applier {
    client: Client,
    namespace: String,
    manager: &'static str,
    owner: OwnerReference,
}

impl Applier {
    /// An applier for the objects owned by `owner`, written as `manager`.
    pub fn new<O>(client: Client, owner: &O, manager: &'static str) -> Result<Self>
    where
        O: Resource<DynamicType = ()>,
    {
        let namespace = owner.namespace().ok_or(Error::MissingMeta("namespace"))?;
        let owner = owner.controller_owner_ref(&()).ok_or(Error::MissingMeta("uid"))?;
        Ok(Applier { client, namespace, manager, owner })
    }

    /// The owner reference put on every object.
    pub fn owner(&self) -> &OwnerReference {
        &self.owner
    }

    /// The namespace objects are written in.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Puts the owner reference and namespace on `obj`; returns its name.
    fn own<K: Resource>(&self, obj: &mut K) -> Result<String> {
        obj.meta_mut().owner_references = Some(vec![self.owner.clone()]);
        obj.meta_mut().namespace = Some(self.namespace.clone());
        obj.meta().name.clone().ok_or(Error::MissingMeta("name"))
    }

    /// Server-side applies `obj` (forcing conflicts: the operator owns these fields).
    pub async fn apply<K>(&self, mut obj: K) -> Result<K>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
            + Serialize
            + DeserializeOwned
            + Clone
            + Debug,
    {
        let name = self.own(&mut obj)?;
        let params = PatchParams::apply(self.manager).force();
        Ok(self.api::<K>().patch(&name, &params, &Patch::Apply(&obj)).await?)
    }

    /// Creates `obj` unless an object of that name exists; returns what is stored either way.
    /// For generated Secrets: written once, never overwritten.
    pub async fn create_once<K>(&self, mut obj: K) -> Result<K>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
            + Serialize
            + DeserializeOwned
            + Clone
            + Debug,
    {
        let name = self.own(&mut obj)?;
        let api = self.api::<K>();
        if let Some(existing) = api.get_opt(&name).await? {
            return Ok(existing);
        }
        let params = PostParams { field_manager: Some(self.manager.to_owned()), ..Default::default() };
        match api.create(&params, &obj).await {
            Ok(created) => Ok(created),
            // Created between our read and write (another reconcile): keep theirs.
            Err(kube::Error::Api(status)) if status.is_already_exists() => Ok(api.get(&name).await?),
            Err(err) => Err(err.into()),
        }
    }

    /// Deletes every object of kind `K` that carries `selector`'s labels and this applier's
    /// owner reference but is not named in `keep`: what the owner no longer wants (an optional
    /// object switched off, a managed Redis after a switch to an external one). Found by label,
    /// so no list of what might once have been created is kept by hand. Returns the names
    /// deleted.
    pub async fn prune<K>(&self, selector: &str, keep: &[String]) -> Result<Vec<String>>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()> + DeserializeOwned + Clone + Debug,
    {
        let listed = self.api::<K>().list(&ListParams::default().labels(selector)).await?;
        let mut deleted = Vec::new();
        for object in listed.items {
            let name = object.name_any();
            let ours = object.owner_references().iter().any(|r| r.uid == self.owner.uid);
            if ours && !keep.contains(&name) && self.delete_owned::<K>(&name).await? {
                deleted.push(name);
            }
        }
        Ok(deleted)
    }

    /// Deletes `name` if it exists and this applier's owner owns it (an optional object that
    /// was switched off). Objects someone else owns are left alone.
    pub async fn delete_owned<K>(&self, name: &str) -> Result<bool>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()> + DeserializeOwned + Clone + Debug,
    {
        let api = self.api::<K>();
        let Some(existing) = api.get_opt(name).await? else { return Ok(false) };
        if !existing.owner_references().iter().any(|r| r.uid == self.owner.uid) {
            return Ok(false);
        }
        match api.delete(name, &DeleteParams::background()).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.is_not_found() => Ok(false),
            Err(err) => Err(err.into()),
        }
    }
}
