//! Images on the node: whether one is there and what it is, and making it: a pull, a build from an
//! uploaded context, a load from an uploaded archive, each checked against `bai.lock` where it pins one.

use super::*;

impl Engine {
    /// Whether an image is present under `reference` (a tag, or a `repo@digest`).
    pub async fn image_exists(&self, reference: &str) -> Result<bool, DockerError> {
        let segment = image_segment(reference)?;
        let image = self.inspect_image(&segment).await.map_err(api(format!("inspecting image {reference}")))?;
        Ok(image.is_some())
    }

    /// The id and repository digests (`repo@sha256:…`) of the image `reference` names, or `None` when
    /// there is no such image. A string that is not an image reference is refused
    /// ([`DockerError::InvalidReference`]), never looked up.
    pub async fn image_facts(&self, reference: &str) -> Result<Option<(String, Vec<String>)>, DockerError> {
        let segment = image_segment(reference)?;
        let image = self.inspect_image(&segment).await.map_err(api(format!("inspecting image {reference}")))?;
        Ok(image.map(|image| (image.id.unwrap_or_default(), image.repo_digests.unwrap_or_default())))
    }

    /// Makes the image present under `spec.reference` and returns its id. A pull is skipped when the
    /// reference (at the pinned digest, if any) is already there; a build or an archive load always runs,
    /// because the reference may name older content and Docker's cache makes the repeat cheap.
    pub async fn ensure_image(
        &self,
        req: &EnsureImage,
        blob_path: &dyn Fn(&str) -> PathBuf,
    ) -> Result<String, DockerError> {
        let spec = &req.spec;
        // Refused before anything is pulled, built, loaded or recorded.
        let segment = image_segment(&spec.reference)?;
        let locked = req.locked.clone().unwrap_or_default();
        match &req.source {
            ImageRecipe::Pull => {
                // The lock's digest pins the pull as the config's own `digest` would; the config's wins
                // (the controller refuses a lock that disagrees with it before getting here).
                let mut pinned = spec.clone();
                pinned.digest = spec.digest.clone().or_else(|| locked.digest.clone());
                self.pull(&pinned).await?;
                if let Some(digest) = &pinned.digest {
                    let digests = self.image_facts(&spec.reference).await?.map(|f| f.1).unwrap_or_default();
                    if !digests.iter().any(|d| d.ends_with(&format!("@{digest}"))) {
                        return Err(DockerError::Locked {
                            image: req.name.clone(),
                            reference: spec.reference.clone(),
                            message: format!("bai.lock pins digest {digest}, but the node's copy has {digests:?}"),
                        });
                    }
                }
            }
            ImageRecipe::Build { context_sha256, dockerfile } => {
                // A node whose ref already is the locked image has exactly it: building again could only
                // give another id (builds are not reproducible).
                let current = self.image_facts(&spec.reference).await?.map(|f| f.0);
                if locked.image_id.is_none() || current != locked.image_id {
                    self.build(spec, context_sha256, dockerfile, &blob_path(context_sha256)).await?
                }
            }
            ImageRecipe::Archive { sha256 } => {
                self.load(spec, sha256, &blob_path(sha256)).await?;
                if let Some(want) = &locked.image_id {
                    let got = self.image_facts(&spec.reference).await?.map(|f| f.0);
                    if got.as_deref() != Some(want.as_str()) {
                        return Err(DockerError::Locked {
                            image: req.name.clone(),
                            reference: spec.reference.clone(),
                            message: format!(
                                "the archive loaded as {}, but bai.lock records {want}",
                                got.as_deref().unwrap_or("nothing")
                            ),
                        });
                    }
                }
            }
        }
        match self.inspect_image(&segment).await {
            Ok(Some(image)) => Ok(image.id.unwrap_or_default()),
            Ok(None) => match req.source {
                // `docker load` tags from the archive's own manifest, which may not name this reference.
                ImageRecipe::Archive { .. } => Err(DockerError::NotInArchive { reference: spec.reference.clone() }),
                _ => Err(DockerError::ImageMissing { reference: spec.reference.clone() }),
            },
            Err(e) => Err(api(format!("inspecting image {}", spec.reference))(e)),
        }
    }

    pub(super) async fn pull(&self, spec: &ImageSpec) -> Result<(), DockerError> {
        let reference = &spec.reference;
        let (repo, tag) = split_reference(reference);
        // The digest may come from the lock rather than the reference: `repo@digest` is checked whole.
        let pinned = spec.digest.as_ref().map(|digest| format!("{repo}@{digest}"));
        if let Some(pinned) = &pinned {
            image_segment(pinned)?;
        }
        match self.inspect_image(&image_segment(reference)?).await {
            Ok(Some(image)) => {
                let pinned = spec.digest.as_ref().is_none_or(|digest| {
                    image.repo_digests.unwrap_or_default().iter().any(|d| d.ends_with(&format!("@{digest}")))
                });
                if pinned {
                    return Ok(());
                }
            }
            Ok(None) => {}
            Err(e) => return Err(api(format!("inspecting image {reference}"))(e)),
        }
        // With a pinned digest, pull exactly that content, then give it the reference's tag, so that a
        // moved tag in the registry cannot change what runs.
        let wanted = spec.digest.as_deref().unwrap_or(tag);
        let failed = |e: EngineError| DockerError::Pull { reference: reference.clone(), message: e.message() };
        let path = format!("/images/create{}", query(&[("fromImage", repo), ("tag", wanted)]));
        let mut progress = self.docker.send("POST", &path, Body::Empty).await.map_err(failed)?;
        let mut pending = Vec::new();
        while progress.message(&mut pending).await.map_err(failed)?.is_some() {}
        if let Some(pinned) = &pinned {
            let path = format!("/images/{}/tag{}", image_segment(pinned)?, query(&[("repo", repo), ("tag", tag)]));
            self.post(&path, Body::Empty).await.map_err(api(format!("tagging {pinned} as {reference}")))?;
        }
        Ok(())
    }

    pub(super) async fn build(
        &self,
        spec: &ImageSpec,
        sha256: &str,
        dockerfile: &str,
        blob: &Path,
    ) -> Result<(), DockerError> {
        let reference = &spec.reference;
        let context = self.open_blob(spec, sha256, blob).await?;
        // `forcerm`: a failed step must not leave its intermediate container (and the image under it)
        // behind on the node.
        let path =
            format!("/build{}", query(&[("dockerfile", dockerfile), ("t", reference), ("rm", "1"), ("forcerm", "1")]));
        let mut log: VecDeque<String> = VecDeque::with_capacity(BUILD_LOG_TAIL);
        let failed = |e: EngineError, log: &mut VecDeque<String>| DockerError::Build {
            reference: reference.clone(),
            message: e.message(),
            log: std::mem::take(log).into(),
        };
        let mut output = match self.docker.send("POST", &path, Body::TarFile(context)).await {
            Ok(output) => output,
            Err(e) => return Err(failed(e, &mut log)),
        };
        let mut pending = Vec::new();
        loop {
            match output.message(&mut pending).await {
                Ok(Some(info)) => {
                    for line in info.stream.iter().flat_map(|s| s.lines()).filter(|l| !l.trim().is_empty()) {
                        if log.len() == BUILD_LOG_TAIL {
                            log.pop_front();
                        }
                        log.push_back(line.to_string());
                    }
                }
                Ok(None) => return Ok(()),
                Err(e) => return Err(failed(e, &mut log)),
            }
        }
    }

    pub(super) async fn load(&self, spec: &ImageSpec, sha256: &str, blob: &Path) -> Result<(), DockerError> {
        let archive = self.open_blob(spec, sha256, blob).await?;
        let failed = |e: EngineError| DockerError::Load { reference: spec.reference.clone(), message: e.message() };
        let path = format!("/images/load{}", query(&[("quiet", "1")]));
        let mut output = self.docker.send("POST", &path, Body::TarFile(archive)).await.map_err(failed)?;
        let mut pending = Vec::new();
        while output.message(&mut pending).await.map_err(failed)?.is_some() {}
        Ok(())
    }

    pub(super) async fn open_blob(
        &self,
        spec: &ImageSpec,
        sha256: &str,
        path: &Path,
    ) -> Result<tokio::fs::File, DockerError> {
        tokio::fs::File::open(path).await.map_err(|source| DockerError::Blob {
            reference: spec.reference.clone(),
            sha256: sha256.to_string(),
            path: path.to_path_buf(),
            source,
        })
    }
}

/// Splits an image reference into the repository and the tag (or `sha256:` digest) the engine's pull
/// endpoint wants, the way the Docker CLI does: no tag means `latest`, never "every tag".
pub(super) fn split_reference(reference: &str) -> (&str, &str) {
    if let Some((repo, digest)) = reference.split_once('@') {
        return (repo, digest);
    }
    let name_start = reference.rfind('/').map_or(0, |i| i + 1);
    match reference[name_start..].rfind(':') {
        Some(i) => (&reference[..name_start + i], &reference[name_start + i + 1..]),
        None => (reference, "latest"),
    }
}

/// The digest part (`sha256:…`) of the repository digest matching `reference`'s repository, else of the
/// first one.
pub fn repo_digest(reference: &str, repo_digests: &[String]) -> Option<String> {
    let (repo, _) = split_reference(reference);
    let digest_of = |d: &String| d.split_once('@').map(|(_, digest)| digest.to_string());
    repo_digests
        .iter()
        .find(|d| d.split_once('@').is_some_and(|(r, _)| r == repo))
        .or(repo_digests.first())
        .and_then(digest_of)
}
