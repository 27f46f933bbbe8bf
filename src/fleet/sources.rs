//! The image sources of one run, packed or hashed once however many nodes receive them: the executor
//! uploads the same bytes to every node that builds or loads the image, and the generation record names
//! the same sha256 the nodes were sent. A build context is packed in memory on first use (contexts are
//! small); an archive is hashed by streaming it and uploaded chunk by chunk from the file, never held
//! whole in memory.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::fleet::context;
use crate::model::{Cluster, ImageSource};
use crate::protocol::ImageRecipe;

/// The bytes a node is sent for an image.
#[derive(Debug)]
pub enum Blob {
    /// A packed build context.
    Packed(Vec<u8>),
    /// An image archive, read from its file when sent.
    File { path: PathBuf, len: u64 },
}

impl Blob {
    pub fn len(&self) -> u64 {
        match self {
            Blob::Packed(bytes) => bytes.len() as u64,
            Blob::File { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// At most `max` bytes from `offset`.
    pub fn chunk(&self, offset: u64, max: usize) -> std::io::Result<Vec<u8>> {
        match self {
            Blob::Packed(bytes) => {
                let start = usize::try_from(offset).unwrap_or(usize::MAX).min(bytes.len());
                Ok(bytes[start..bytes.len().min(start.saturating_add(max))].to_vec())
            }
            Blob::File { path, .. } => {
                let mut file = std::fs::File::open(path)?;
                file.seek(SeekFrom::Start(offset))?;
                let mut out = Vec::with_capacity(max);
                file.take(max as u64).read_to_end(&mut out)?;
                Ok(out)
            }
        }
    }
}

/// One image's source as the nodes get it.
#[derive(Debug)]
pub struct Prepared {
    /// What `ensure_image` is told.
    pub source: ImageRecipe,
    /// What is uploaded first, with its sha256; `None` for a pulled image.
    pub blob: Option<(Blob, String)>,
}

/// The sources of a cluster's images, each prepared on first use and kept for the run.
pub struct Sources<'a> {
    cluster: &'a Cluster,
    prepared: Mutex<BTreeMap<String, Arc<Result<Prepared, String>>>>,
}

impl<'a> Sources<'a> {
    pub fn new(cluster: &'a Cluster) -> Self {
        Sources { cluster, prepared: Mutex::new(BTreeMap::new()) }
    }

    /// Image `image`'s source, packed or hashed the first time it is asked for; `Err(why)` when it
    /// cannot be read (then every node is told the same).
    pub fn get(&self, image: &str) -> Arc<Result<Prepared, String>> {
        let mut prepared = self.prepared.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        prepared.entry(image.to_string()).or_insert_with(|| Arc::new(prepare(self.cluster, image))).clone()
    }

    /// The sha256 of image `image`'s context or archive, `None` for a pulled image or one that cannot be
    /// read.
    pub fn sha256(&self, image: &str) -> Option<String> {
        match &*self.get(image) {
            Ok(Prepared { blob: Some((_, sha)), .. }) => Some(sha.clone()),
            _ => None,
        }
    }
}

fn prepare(cluster: &Cluster, image: &str) -> Result<Prepared, String> {
    let Some(config) = cluster.images.iter().find(|i| i.name.value.as_str() == image) else {
        return Err(format!("image `{image}` is not in the configuration"));
    };
    Ok(match &config.source {
        ImageSource::Pull => Prepared { source: ImageRecipe::Pull, blob: None },
        ImageSource::Build { context, dockerfile } => {
            let (bytes, sha) = context::pack(&context.value)
                .map_err(|e| format!("cannot pack build context `{}`: {e}", context.value.display()))?;
            let dockerfile = dockerfile.as_ref().map_or_else(|| "Dockerfile".to_string(), |d| d.value.clone());
            Prepared {
                source: ImageRecipe::Build { context_sha256: sha.clone(), dockerfile },
                blob: Some((Blob::Packed(bytes), sha)),
            }
        }
        ImageSource::Archive { path } => {
            let read = |e: std::io::Error| format!("cannot read archive `{}`: {e}", path.value.display());
            let len = std::fs::metadata(&path.value).map_err(read)?.len();
            let sha = context::file_sha256(&path.value).map_err(read)?;
            Prepared {
                source: ImageRecipe::Archive { sha256: sha.clone() },
                blob: Some((Blob::File { path: path.value.clone(), len }, sha)),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_of_a_packed_blob_and_of_a_file_are_the_same_bytes() {
        let bytes: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("archive.tar");
        std::fs::write(&path, &bytes).expect("write");
        let file = Blob::File { path, len: 1000 };
        let packed = Blob::Packed(bytes.clone());
        for blob in [&file, &packed] {
            assert_eq!(blob.len(), 1000);
            let mut all = Vec::new();
            let mut offset = 0;
            while offset < blob.len() {
                let chunk = blob.chunk(offset, 300).expect("chunk");
                assert!(!chunk.is_empty() && chunk.len() <= 300);
                offset += chunk.len() as u64;
                all.extend(chunk);
            }
            assert_eq!(all, bytes);
            assert!(blob.chunk(1000, 300).expect("past the end").is_empty());
            assert!(blob.chunk(5000, 300).expect("far past the end").is_empty());
        }
    }

    #[test]
    fn a_context_is_packed_once_per_run_and_every_node_gets_those_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("ctx")).expect("mkdir");
        std::fs::write(dir.path().join("ctx/Dockerfile"), "FROM scratch\n").expect("write");
        let lab = dir.path().join("lab.kdl");
        std::fs::write(&lab, "cluster \"c\" {\n    node \"a\"\n    image \"built\" ref=\"x/y:1\" {\n        build context=\"./ctx\"\n    }\n}\n")
            .expect("write lab");
        let loaded = crate::config::load(&lab);
        assert!(loaded.problems.iter().all(|p| !p.is_error()), "{:?}", loaded.problems);
        let sources = Sources::new(&loaded.config.clusters[0]);
        let first = sources.get("built");
        let sha = sources.sha256("built").expect("a sha256");
        // The context changes in the middle of the run: the nodes still get what the run packed first.
        std::fs::write(dir.path().join("ctx/Dockerfile"), "FROM scratch\nENV X=1\n").expect("write");
        assert!(Arc::ptr_eq(&first, &sources.get("built")), "packed once");
        assert_eq!(sources.sha256("built"), Some(sha.clone()));
        assert_ne!(Sources::new(&loaded.config.clusters[0]).sha256("built"), Some(sha), "a new run packs anew");
        assert!(matches!(&*sources.get("missing"), Err(why) if why.contains("not in the configuration")));
    }
}
