//! Name lookup for one cluster: the first definition of each name, per kind.

use std::collections::HashMap;

use crate::model::{Cluster, Image, Node, Session, Vfolder};

pub struct ClusterIndex<'a> {
    pub nodes: HashMap<&'a str, &'a Node>,
    pub images: HashMap<&'a str, &'a Image>,
    pub vfolders: HashMap<&'a str, &'a Vfolder>,
    pub sessions: HashMap<&'a str, &'a Session>,
}

impl<'a> ClusterIndex<'a> {
    pub fn new(cluster: &'a Cluster) -> Self {
        fn first<'a, T>(items: &'a [T], name: impl Fn(&'a T) -> &'a str) -> HashMap<&'a str, &'a T> {
            let mut map = HashMap::with_capacity(items.len());
            for item in items {
                map.entry(name(item)).or_insert(item);
            }
            map
        }
        ClusterIndex {
            nodes: first(&cluster.nodes, |n| n.name.value.as_str()),
            images: first(&cluster.images, |i| i.name.value.as_str()),
            vfolders: first(&cluster.vfolders, |v| v.name.value.as_str()),
            sessions: first(&cluster.sessions, |s| s.name.value.as_str()),
        }
    }
}
