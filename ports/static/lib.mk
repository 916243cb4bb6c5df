# lib.mk - compile a list of C sources into one static library.
#
#   make -f lib.mk OUT=dir/libx.a OBJDIR=dir/obj SRCS="a.c b/c.c" CC=... CFLAGS=...
#
# The static builds compile mbedTLS, libmosquitto, SQLite, zstd and zlib with
# this one rule set instead of each project's own build system, so every
# library gets the same compiler, flags and section garbage collection.
OBJS := $(foreach s,$(SRCS),$(OBJDIR)/$(subst /,__,$(s:.c=.o)))

$(OUT): $(OBJS)
	@rm -f $@
	$(AR) rcs $@ $^

define one
$(OBJDIR)/$(subst /,__,$(1:.c=.o)): $(1)
	@mkdir -p $(OBJDIR)
	$$(CC) $$(CFLAGS) -c -o $$@ $$<
endef
$(foreach s,$(SRCS),$(eval $(call one,$(s))))
