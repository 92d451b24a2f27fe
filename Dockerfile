# The sidecar image (deployment 3 of DESIGN.md): one static binary and the shipped config,
# nothing else: no shell, no libc, no CA store (the binary carries the webpki roots).
#
# Build the binary on the host first, then the image, from the repository root:
#   deploy/build-static.sh
#   docker build -t immutable-id-proxy:0.1.0 .
# The binary is copied, not compiled here, so the image holds exactly the binary the tests
# ran (tests/sidecar.rs starts it in an empty root directory).
FROM scratch

COPY target/x86_64-unknown-linux-gnu/static/immutable-id-proxy /immutable-id-proxy
COPY config.toml /etc/immutable-id-proxy/config.toml

# The shipped config listens on loopback; inside a container the published ports must accept
# connections from outside it. A Kubernetes sidecar narrows both back to 127.0.0.1
# (deploy/k8s-gateway.yaml). Any other key: IDPROXY__<SECTION>__<KEY>.
ENV IDPROXY__LISTEN__ADDR=0.0.0.0:8080 \
    IDPROXY__ADMIN__ADDR=0.0.0.0:9090 \
    IDPROXY__LOG__FORMAT=json

# No /etc/passwd is needed for a numeric user. 65532 is the usual "nonroot" id.
USER 65532:65532
EXPOSE 8080 9090

# `probe` GETs http://127.0.0.1:9090/readyz: exit 0 on 2xx, 1 otherwise. Exec form, as there
# is no shell to run a command string.
HEALTHCHECK --interval=10s --timeout=5s --start-period=5s --retries=3 \
    CMD ["/immutable-id-proxy", "probe"]

ENTRYPOINT ["/immutable-id-proxy"]
CMD ["run", "--config", "/etc/immutable-id-proxy/config.toml"]
