# bai as a Nix flake: the package, a development shell, checks and `nix run`.
#
#   nix build            # `bai` and `bai-agent` (what bai installs on nodes), built from Cargo.lock
#   nix run . -- --help  # run it
#   nix develop          # the toolchain and what `scripts/test` needs
#   nix flake check      # the build, `cargo test --lib`, rustfmt and clippy
#
# `flake.lock` is not in the repository: `nix flake lock` (or the first `nix build`) writes it.
#
# The version strings below are literals on purpose: tests/it/flake.rs checks that they equal
# Cargo.toml's `version` and `rust-version`, so a release that bumps one and forgets the other fails CI.
{
  description = "bai: a declarative, Nix-style reconciler for GPU labs";

  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.11";
    # The crate is edition 2024 with `rust-version = "1.95"`, newer than a release branch's rustc;
    # rust-overlay gives that exact toolchain on any nixpkgs.
    rust-overlay = {
      url = "github:oxalica/rust-overlay";
      inputs.nixpkgs.follows = "nixpkgs";
    };
  };

  outputs = { self, nixpkgs, rust-overlay }:
    let
      pname = "bai";
      version = "0.1.0";
      rustVersion = "1.95.0";

      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAllSystems = f: nixpkgs.lib.genAttrs systems (system: f (import nixpkgs {
        inherit system;
        overlays = [ rust-overlay.overlays.default ];
      }));

      # The stable toolchain's default profile: rustc, cargo, clippy and rustfmt.
      toolchainFor = pkgs: pkgs.rust-bin.stable.${rustVersion}.default;

      baiFor = pkgs:
        let
          toolchain = toolchainFor pkgs;
          rustPlatform = pkgs.makeRustPlatform { cargo = toolchain; rustc = toolchain; };
        in
        rustPlatform.buildRustPackage {
          inherit pname version;
          # Only what cargo reads: the integration tests and benches are targets named in Cargo.toml,
          # so they must exist even though the sandbox never runs them.
          src = nixpkgs.lib.fileset.toSource {
            root = ./.;
            fileset = nixpkgs.lib.fileset.unions [
              ./Cargo.toml
              ./Cargo.lock
              # The build's identity, which `bai` looks for in the `bai-agent` beside it.
              ./build.rs
              ./src
              ./tests
              ./benches
              ./schema
              ./examples
            ];
          };
          cargoLock.lockFile = ./Cargo.lock;

          # Unit tests only. The integration suite (tests/it) starts a real sshd, logs in as the user
          # `bai-test` and drives the machine's Docker engine, none of which a Nix build sandbox has;
          # `scripts/test` runs the whole suite on a machine that does.
          doCheck = true;
          cargoTestFlags = [ "--lib" ];

          meta = {
            description = "A declarative, Nix-style reconciler for GPU labs";
            license = nixpkgs.lib.licenses.asl20;
            mainProgram = "bai";
            platforms = systems;
          };
        };
    in
    {
      packages = forAllSystems (pkgs: {
        bai = baiFor pkgs;
        default = baiFor pkgs;
      });

      apps = forAllSystems (pkgs: {
        default = {
          type = "app";
          program = nixpkgs.lib.getExe (baiFor pkgs);
        };
      });

      # What a sandbox can check: the build with `cargo test --lib`, formatting and lints.
      # The full suite (integration tests against sshd and Docker) is `scripts/test`.
      checks = forAllSystems (pkgs:
        let
          bai = baiFor pkgs;
          toolchain = toolchainFor pkgs;
        in
        {
          build = bai;

          fmt = pkgs.runCommand "bai-fmt-check" { nativeBuildInputs = [ toolchain ]; } ''
            # cargo wants a writable home even to only read the manifest.
            export HOME=$TMPDIR CARGO_HOME=$TMPDIR/cargo
            cd ${bai.src}
            cargo fmt --all -- --check
            touch $out
          '';

          # The package's vendored dependencies, with clippy in place of the build.
          clippy = bai.overrideAttrs (_: {
            pname = "${pname}-clippy";
            buildPhase = ''
              runHook preBuild
              cargo clippy --offline --locked --all-targets -- -D warnings
              runHook postBuild
            '';
            doCheck = false;
            installPhase = ''
              touch $out
            '';
          });
        });

      # `nix develop`: the toolchain plus what the integration tests use (OpenSSH, the Docker client, a
      # static busybox for the test images, zstd for the agent's upload, promtool for the /metrics text).
      # The tests read sshd and busybox at Debian's paths (/usr/sbin/sshd, /bin/busybox) and need the
      # machine's Docker engine and `bai-test` user: `scripts/test` sets those up on Debian; elsewhere,
      # link these there.
      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell {
          packages = [
            (toolchainFor pkgs)
            pkgs.openssh
            pkgs.docker-client
            pkgs.pkgsStatic.busybox
            pkgs.zstd
            pkgs.prometheus
            pkgs.git
          ];
        };
      });
    };
}
