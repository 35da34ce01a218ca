"""Running the policy's programs: sandboxed sessions, the code rule, and the SandboxFusion-compatible runner."""
