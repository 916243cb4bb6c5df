SUMMARY = "Edge ingestion agent with a durable local queue"
DESCRIPTION = "agentd collects records (lines tailed from files), keeps every \
accepted record in a durable SQLite queue until the data lake has \
acknowledged it, and ships it compressed and batched over MQTT, HTTPS or to \
an S3-compatible object store. agentctl status shows whether data is \
flowing and, if not, why."
SECTION = "net"

# The agentd source tree has no LICENSE file yet. When it has one, set
# LICENSE to its SPDX id and add
#   LIC_FILES_CHKSUM = "file://LICENSE;md5=<md5sum of LICENSE>"
LICENSE = "CLOSED"

# SET THESE: the address of your agentd git repository, its branch, and the
# commit of release 0.1.0 (git rev-parse v0.1.0). The values below are
# placeholders and do not fetch.
SRC_URI = "git://git.example.invalid/agentd.git;protocol=https;branch=main"
SRCREV = "0000000000000000000000000000000000000000"

S = "${WORKDIR}/git"
B = "${WORKDIR}/build"

# mosquitto and mbedtls come from meta-networking (meta-openembedded).
DEPENDS = "mosquitto curl sqlite3 zstd mbedtls zlib"

inherit systemd useradd

USERADD_PACKAGES = "${PN}"
USERADD_PARAM:${PN} = "--system --user-group --home-dir ${localstatedir}/lib/agentd \
    --no-create-home --shell ${base_sbindir}/nologin agentd"

# The project's Makefile appends its own flags to CFLAGS and LDFLAGS from the
# environment; "make -e" would drop them.
EXTRA_OEMAKE = ""

# The two file targets only: "all" would run the project's apt-based
# dependency installer. Objects and binaries go to ${B}.
do_compile() {
    oe_runmake -C ${S} CC="${CC}" AR="${AR}" RELEASE=1 O=${B} ${B}/agentd ${B}/agentctl
}

do_install() {
    install -d ${D}${bindir} ${D}${sysconfdir}/agentd ${D}${systemd_system_unitdir} \
        ${D}${docdir}/${BPN}
    install -m 0755 ${B}/agentd ${B}/agentctl ${D}${bindir}/
    # The example config: it passes agentd --check-config and runs as is,
    # reporting its example input and output as problems until edited.
    install -m 0644 ${S}/conf/agentd.conf ${D}${sysconfdir}/agentd/agentd.conf
    # The unit names /usr/bin; follow ${bindir} if the distro moves it.
    sed -e 's|/usr/bin/agentd|${bindir}/agentd|g' ${S}/ports/systemd/agentd.service \
        >${D}${systemd_system_unitdir}/agentd.service
    chmod 0644 ${D}${systemd_system_unitdir}/agentd.service
    install -m 0644 ${S}/docs/operations.md ${S}/docs/install.md ${S}/docs/configuration.md \
        ${D}${docdir}/${BPN}/
}

SYSTEMD_SERVICE:${PN} = "agentd.service"

FILES:${PN} = "${bindir}/agentd ${bindir}/agentctl ${sysconfdir}/agentd \
    ${systemd_system_unitdir}/agentd.service"
CONFFILES:${PN} = "${sysconfdir}/agentd/agentd.conf"
