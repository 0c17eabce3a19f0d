/*-------------------------------------------------------------------------
 *
 * pg_shim.c
 *		  The few backend functions that src/frame.c, src/codec.c and
 *		  src/crypto.c call, for running them outside a server: in the
 *		  libFuzzer target (fuzz_frame.c) and the seed generator
 *		  (gen_seeds.c).
 *
 * Memory contexts are a plain tree; every chunk is its own malloc() with a
 * small header, so AddressSanitizer sees the exact size of every palloc'd
 * object and catches a read or write one byte past it.  Resetting or
 * deleting a context runs its reset callbacks (newest first, as mcxt.c
 * does) and frees its chunks and children.
 *
 * ereport()/elog(): ERROR and above are kept in one static ErrorData-like
 * record and end in siglongjmp() to PG_exception_stack, as in the server;
 * the caller reads the code and message with shim_error_code() and
 * shim_error_message() and clears them with FlushErrorState().  Lower
 * levels are printed to stderr when SHIM_VERBOSE is set and otherwise
 * dropped.  A FATAL or PANIC, or an ERROR with no handler, aborts: the
 * fuzzer records it as a crash.
 *
 * The register-side writers of codec.c (de_relout_build(),
 * de_write_insert()...) need the catalog; pg_stubs.c gives the linker
 * stubs of those functions that abort, because nothing here calls them.
 *
 * IDENTIFICATION
 *		  test/fuzz/pg_shim.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/time.h>

#include "lib/stringinfo.h"
#include "nodes/memnodes.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "pg_shim.h"

/* port.h maps these to src/port's versions; the C library's will do. */
#undef vsnprintf
#undef snprintf
#undef fprintf
#undef printf

/* ---------- globals the backend headers declare ---------- */

MemoryContext CurrentMemoryContext = NULL;
MemoryContext TopMemoryContext = NULL;
MemoryContext ErrorContext = NULL;
sigjmp_buf *PG_exception_stack = NULL;
ErrorContextCallback *error_context_stack = NULL;

/* ---------- memory contexts ---------- */

typedef struct ShimChunk
{
	struct ShimChunk *prev;
	struct ShimChunk *next;
	Size		size;
	void	   *pad;			/* keeps the header MAXALIGNed */
	MemoryContext context;		/* last: see GetMemoryChunkContext() */
} ShimChunk;

StaticAssertDecl(sizeof(ShimChunk) % MAXIMUM_ALIGNOF == 0,
				 "chunk header must be MAXALIGNed");

typedef struct ShimContext
{
	MemoryContextData header;
	ShimChunk  *chunks;
} ShimContext;

static const MemoryContextMethods shim_methods;

#define ChunkOf(ptr)	((ShimChunk *) ((char *) (ptr) - sizeof(ShimChunk)))
#define PtrOf(chunk)	((void *) ((char *) (chunk) + sizeof(ShimChunk)))

static MemoryContext
shim_context_create(MemoryContext parent, const char *name)
{
	ShimContext *cxt = calloc(1, sizeof(ShimContext));

	if (cxt == NULL)
		abort();
	cxt->header.type = T_AllocSetContext;
	cxt->header.isReset = true;
	cxt->header.methods = &shim_methods;
	cxt->header.name = name;
	cxt->header.parent = parent;
	if (parent != NULL)
	{
		cxt->header.nextchild = parent->firstchild;
		if (parent->firstchild != NULL)
			parent->firstchild->prevchild = &cxt->header;
		parent->firstchild = &cxt->header;
	}
	return &cxt->header;
}

MemoryContext
AllocSetContextCreateInternal(MemoryContext parent, const char *name,
							  Size minContextSize, Size initBlockSize,
							  Size maxBlockSize)
{
	return shim_context_create(parent, name);
}

MemoryContext
GenerationContextCreate(MemoryContext parent, const char *name,
						Size minContextSize, Size initBlockSize,
						Size maxBlockSize)
{
	return shim_context_create(parent, name);
}

static void *
shim_alloc(MemoryContext context, Size size, int flags)
{
	ShimContext *cxt = (ShimContext *) context;
	ShimChunk  *chunk;

	if (context == NULL)
		elog(PANIC, "palloc with no current memory context");
	if (((flags & MCXT_ALLOC_HUGE) != 0 && !AllocHugeSizeIsValid(size)) ||
		((flags & MCXT_ALLOC_HUGE) == 0 && !AllocSizeIsValid(size)))
		elog(ERROR, "invalid memory alloc request size %zu", size);

	chunk = malloc(sizeof(ShimChunk) + size);
	if (chunk == NULL)
	{
		if (flags & MCXT_ALLOC_NO_OOM)
			return NULL;
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory"),
				 errdetail("Failed on request of size %zu in memory context \"%s\".",
						   size, context->name)));
	}
	chunk->size = size;
	chunk->pad = NULL;
	chunk->context = context;
	chunk->prev = NULL;
	chunk->next = cxt->chunks;
	if (cxt->chunks != NULL)
		cxt->chunks->prev = chunk;
	cxt->chunks = chunk;
	context->isReset = false;
	context->mem_allocated += size;
	if (flags & MCXT_ALLOC_ZERO)
		memset(PtrOf(chunk), 0, size);
	return PtrOf(chunk);
}

static void
shim_chunk_free(ShimChunk *chunk)
{
	ShimContext *cxt = (ShimContext *) chunk->context;

	if (chunk->prev != NULL)
		chunk->prev->next = chunk->next;
	else
		cxt->chunks = chunk->next;
	if (chunk->next != NULL)
		chunk->next->prev = chunk->prev;
	cxt->header.mem_allocated -= chunk->size;
	free(chunk);
}

void *
MemoryContextAlloc(MemoryContext context, Size size)
{
	return shim_alloc(context, size, 0);
}

void *
MemoryContextAllocZero(MemoryContext context, Size size)
{
	return shim_alloc(context, size, MCXT_ALLOC_ZERO);
}

void *
MemoryContextAllocZeroAligned(MemoryContext context, Size size)
{
	return shim_alloc(context, size, MCXT_ALLOC_ZERO);
}

void *
MemoryContextAllocExtended(MemoryContext context, Size size, int flags)
{
	return shim_alloc(context, size, flags);
}

void *
MemoryContextAllocHuge(MemoryContext context, Size size)
{
	return shim_alloc(context, size, MCXT_ALLOC_HUGE);
}

void *
palloc(Size size)
{
	return shim_alloc(CurrentMemoryContext, size, 0);
}

void *
palloc0(Size size)
{
	return shim_alloc(CurrentMemoryContext, size, MCXT_ALLOC_ZERO);
}

void *
palloc_extended(Size size, int flags)
{
	return shim_alloc(CurrentMemoryContext, size, flags);
}

void
pfree(void *pointer)
{
	shim_chunk_free(ChunkOf(pointer));
}

static void *
shim_realloc(void *pointer, Size size, int flags)
{
	ShimChunk  *old = ChunkOf(pointer);
	void	   *p = shim_alloc(old->context, size, flags);

	memcpy(p, pointer, Min(size, old->size));
	shim_chunk_free(old);
	return p;
}

void *
repalloc(void *pointer, Size size)
{
	return shim_realloc(pointer, size, 0);
}

void *
repalloc_huge(void *pointer, Size size)
{
	return shim_realloc(pointer, size, MCXT_ALLOC_HUGE);
}

char *
MemoryContextStrdup(MemoryContext context, const char *string)
{
	Size		len = strlen(string) + 1;
	char	   *s = shim_alloc(context, len, 0);

	memcpy(s, string, len);
	return s;
}

char *
pstrdup(const char *in)
{
	return MemoryContextStrdup(CurrentMemoryContext, in);
}

char *
pnstrdup(const char *in, Size len)
{
	char	   *s;

	len = strnlen(in, len);
	s = palloc(len + 1);
	memcpy(s, in, len);
	s[len] = '\0';
	return s;
}

size_t
pvsnprintf(char *buf, size_t len, const char *fmt, va_list args)
{
	int			n = vsnprintf(buf, len, fmt, args);

	if (n < 0)
		elog(ERROR, "vsnprintf failed with format \"%s\"", fmt);
	if ((size_t) n < len)
		return (size_t) n;
	return (size_t) n + 1;
}

char *
psprintf(const char *fmt,...)
{
	va_list		args;
	int			n;
	char	   *s;

	va_start(args, fmt);
	n = vsnprintf(NULL, 0, fmt, args);
	va_end(args);
	if (n < 0)
		elog(ERROR, "vsnprintf failed with format \"%s\"", fmt);
	s = palloc(n + 1);
	va_start(args, fmt);
	vsnprintf(s, n + 1, fmt, args);
	va_end(args);
	return s;
}

void
MemoryContextRegisterResetCallback(MemoryContext context,
								   MemoryContextCallback *cb)
{
	cb->next = context->reset_cbs;
	context->reset_cbs = cb;
	context->isReset = false;
}

static void
shim_call_callbacks(MemoryContext context)
{
	MemoryContextCallback *cb;

	/* newest first; each is removed before it runs, as in mcxt.c */
	while ((cb = context->reset_cbs) != NULL)
	{
		context->reset_cbs = cb->next;
		cb->func(cb->arg);
	}
}

static void
shim_free_chunks(MemoryContext context)
{
	ShimContext *cxt = (ShimContext *) context;

	while (cxt->chunks != NULL)
		shim_chunk_free(cxt->chunks);
}

void
MemoryContextDeleteChildren(MemoryContext context)
{
	while (context->firstchild != NULL)
		MemoryContextDelete(context->firstchild);
}

void
MemoryContextResetOnly(MemoryContext context)
{
	shim_call_callbacks(context);
	shim_free_chunks(context);
	context->isReset = true;
}

void
MemoryContextReset(MemoryContext context)
{
	MemoryContextDeleteChildren(context);
	MemoryContextResetOnly(context);
}

void
MemoryContextDelete(MemoryContext context)
{
	MemoryContext parent = context->parent;

	if (context == TopMemoryContext)
		elog(PANIC, "cannot delete TopMemoryContext");
	if (context == CurrentMemoryContext)
		elog(PANIC, "cannot delete the current memory context \"%s\"",
			 context->name);

	MemoryContextDeleteChildren(context);
	shim_call_callbacks(context);
	shim_free_chunks(context);

	if (parent != NULL)
	{
		if (context->prevchild != NULL)
			context->prevchild->nextchild = context->nextchild;
		else
			parent->firstchild = context->nextchild;
		if (context->nextchild != NULL)
			context->nextchild->prevchild = context->prevchild;
	}
	free(context);
}

void
MemoryContextSetParent(MemoryContext context, MemoryContext new_parent)
{
	MemoryContext parent = context->parent;

	if (parent != NULL)
	{
		if (context->prevchild != NULL)
			context->prevchild->nextchild = context->nextchild;
		else
			parent->firstchild = context->nextchild;
		if (context->nextchild != NULL)
			context->nextchild->prevchild = context->prevchild;
	}
	context->parent = new_parent;
	context->prevchild = NULL;
	context->nextchild = NULL;
	if (new_parent != NULL)
	{
		context->nextchild = new_parent->firstchild;
		if (new_parent->firstchild != NULL)
			new_parent->firstchild->prevchild = context;
		new_parent->firstchild = context;
	}
}

void
MemoryContextSetIdentifier(MemoryContext context, const char *id)
{
	context->ident = id;
}

Size
MemoryContextMemAllocated(MemoryContext context, bool recurse)
{
	Size		total = context->mem_allocated;

	if (recurse)
		for (MemoryContext c = context->firstchild; c; c = c->nextchild)
			total += MemoryContextMemAllocated(c, true);
	return total;
}

/* ---------- StringInfo (as src/common/stringinfo.c) ---------- */

StringInfo
makeStringInfo(void)
{
	StringInfo	res = palloc(sizeof(StringInfoData));

	initStringInfo(res);
	return res;
}

void
initStringInfo(StringInfo str)
{
	int			size = 1024;

	str->data = palloc(size);
	str->maxlen = size;
	resetStringInfo(str);
}

void
resetStringInfo(StringInfo str)
{
	str->data[0] = '\0';
	str->len = 0;
	str->cursor = 0;
}

void
enlargeStringInfo(StringInfo str, int needed)
{
	int			newlen;

	if (needed < 0)
		elog(ERROR, "invalid string enlargement request size: %d", needed);
	if (((Size) needed) >= (MaxAllocSize - (Size) str->len))
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("out of memory"),
				 errdetail("Cannot enlarge string buffer containing %d bytes by %d more bytes.",
						   str->len, needed)));

	needed += str->len + 1;
	if (needed <= str->maxlen)
		return;
	newlen = 2 * str->maxlen;
	while (needed > newlen)
		newlen = 2 * newlen;
	if (newlen > (int) MaxAllocSize)
		newlen = (int) MaxAllocSize;
	str->data = repalloc(str->data, newlen);
	str->maxlen = newlen;
}

int
appendStringInfoVA(StringInfo str, const char *fmt, va_list args)
{
	int			avail = str->maxlen - str->len;
	int			n;

	n = vsnprintf(str->data + str->len, avail, fmt, args);
	if (n < 0)
		elog(ERROR, "vsnprintf failed with format \"%s\"", fmt);
	if (n < avail)
	{
		str->len += n;
		return 0;
	}
	str->data[str->len] = '\0';
	return n + 1;
}

void
appendStringInfo(StringInfo str, const char *fmt,...)
{
	for (;;)
	{
		va_list		args;
		int			needed;

		va_start(args, fmt);
		needed = appendStringInfoVA(str, fmt, args);
		va_end(args);
		if (needed == 0)
			break;
		enlargeStringInfo(str, needed);
	}
}

void
appendBinaryStringInfo(StringInfo str, const char *data, int datalen)
{
	enlargeStringInfo(str, datalen);
	memcpy(str->data + str->len, data, datalen);
	str->len += datalen;
	str->data[str->len] = '\0';
}

void
appendBinaryStringInfoNT(StringInfo str, const char *data, int datalen)
{
	enlargeStringInfo(str, datalen);
	memcpy(str->data + str->len, data, datalen);
	str->len += datalen;
}

void
appendStringInfoString(StringInfo str, const char *s)
{
	appendBinaryStringInfo(str, s, strlen(s));
}

void
appendStringInfoChar(StringInfo str, char ch)
{
	if (str->len + 1 >= str->maxlen)
		enlargeStringInfo(str, 1);
	str->data[str->len] = ch;
	str->len++;
	str->data[str->len] = '\0';
}

void
appendStringInfoSpaces(StringInfo str, int count)
{
	if (count > 0)
	{
		enlargeStringInfo(str, count);
		memset(str->data + str->len, ' ', count);
		str->len += count;
		str->data[str->len] = '\0';
	}
}

/* ---------- ereport / elog ---------- */

static struct
{
	int			depth;			/* errstart() without errfinish() yet */
	int			elevel;
	int			sqlerrcode;
	char		message[1024];
	char		detail[1024];
	char		hint[512];
	const char *filename;
	int			lineno;
} shim_error;

static bool shim_verbose = false;

void
shim_init(void)
{
	shim_verbose = getenv("SHIM_VERBOSE") != NULL;
	if (TopMemoryContext == NULL)
	{
		TopMemoryContext = shim_context_create(NULL, "TopMemoryContext");
		ErrorContext = shim_context_create(TopMemoryContext, "ErrorContext");
	}
	CurrentMemoryContext = TopMemoryContext;
}

bool
errstart(int elevel, const char *domain)
{
	if (elevel < ERROR && !shim_verbose)
		return false;
	if (shim_error.depth > 0 && elevel >= ERROR)
	{
		/* an ERROR while building an ERROR: give up like the server does */
		fprintf(stderr, "shim: recursive error reporting\n");
		abort();
	}
	shim_error.depth++;
	shim_error.elevel = elevel;
	shim_error.sqlerrcode = (elevel >= ERROR) ? ERRCODE_INTERNAL_ERROR :
		(elevel == WARNING) ? ERRCODE_WARNING : ERRCODE_SUCCESSFUL_COMPLETION;
	shim_error.message[0] = '\0';
	shim_error.detail[0] = '\0';
	shim_error.hint[0] = '\0';
	return true;
}

bool
errstart_cold(int elevel, const char *domain)
{
	return errstart(elevel, domain);
}

bool
message_level_is_interesting(int elevel)
{
	return elevel >= ERROR || shim_verbose;
}

void
errfinish(const char *filename, int lineno, const char *funcname)
{
	int			elevel = shim_error.elevel;

	shim_error.filename = filename;
	shim_error.lineno = lineno;
	shim_error.depth--;

	if (shim_verbose || elevel >= FATAL ||
		(elevel >= ERROR && PG_exception_stack == NULL))
		fprintf(stderr, "shim: elevel %d at %s:%d (%s): %s [%s] %s\n",
				elevel, filename, lineno, funcname, shim_error.message,
				unpack_sql_state(shim_error.sqlerrcode), shim_error.detail);

	if (elevel >= FATAL)
		abort();
	if (elevel >= ERROR)
	{
		if (PG_exception_stack == NULL)
			abort();
		siglongjmp(*PG_exception_stack, 1);
	}
}

int
errcode(int sqlerrcode)
{
	shim_error.sqlerrcode = sqlerrcode;
	return 0;
}

int
errcode_for_file_access(void)
{
	shim_error.sqlerrcode = ERRCODE_IO_ERROR;
	return 0;
}

#define SHIM_FORMAT(buf, fmt) \
	do { \
		va_list		args_; \
		va_start(args_, fmt); \
		vsnprintf((buf), sizeof(buf), (fmt), args_); \
		va_end(args_); \
	} while (0)

int
errmsg(const char *fmt,...)
{
	SHIM_FORMAT(shim_error.message, fmt);
	return 0;
}

int
errmsg_internal(const char *fmt,...)
{
	SHIM_FORMAT(shim_error.message, fmt);
	return 0;
}

int
errdetail(const char *fmt,...)
{
	SHIM_FORMAT(shim_error.detail, fmt);
	return 0;
}

int
errdetail_internal(const char *fmt,...)
{
	SHIM_FORMAT(shim_error.detail, fmt);
	return 0;
}

int
errdetail_log(const char *fmt,...)
{
	SHIM_FORMAT(shim_error.detail, fmt);
	return 0;
}

int
errhint(const char *fmt,...)
{
	SHIM_FORMAT(shim_error.hint, fmt);
	return 0;
}

int
errmsg_plural(const char *fmt_singular, const char *fmt_plural,
			  unsigned long n,...)
{
	va_list		args;

	va_start(args, n);
	vsnprintf(shim_error.message, sizeof(shim_error.message),
			  n == 1 ? fmt_singular : fmt_plural, args);
	va_end(args);
	return 0;
}

int
errdetail_plural(const char *fmt_singular, const char *fmt_plural,
				 unsigned long n,...)
{
	va_list		args;

	va_start(args, n);
	vsnprintf(shim_error.detail, sizeof(shim_error.detail),
			  n == 1 ? fmt_singular : fmt_plural, args);
	va_end(args);
	return 0;
}

int
set_errcontext_domain(const char *domain)
{
	return 0;
}

int
errcontext_msg(const char *fmt,...)
{
	return 0;
}

int
errhidestmt(bool hide_stmt)
{
	return 0;
}

int
errhidecontext(bool hide_ctx)
{
	return 0;
}

int
errposition(int cursorpos)
{
	return 0;
}

void
pg_re_throw(void)
{
	if (PG_exception_stack == NULL)
		abort();
	siglongjmp(*PG_exception_stack, 1);
}

void
FlushErrorState(void)
{
	shim_error.depth = 0;
	shim_error.elevel = 0;
	shim_error.sqlerrcode = 0;
	shim_error.message[0] = '\0';
	shim_error.detail[0] = '\0';
	shim_error.hint[0] = '\0';
}

ErrorData *
CopyErrorData(void)
{
	ErrorData  *edata = palloc0(sizeof(ErrorData));

	edata->elevel = shim_error.elevel;
	edata->sqlerrcode = shim_error.sqlerrcode;
	edata->filename = shim_error.filename;
	edata->lineno = shim_error.lineno;
	edata->message = pstrdup(shim_error.message);
	if (shim_error.detail[0] != '\0')
		edata->detail = pstrdup(shim_error.detail);
	if (shim_error.hint[0] != '\0')
		edata->hint = pstrdup(shim_error.hint);
	edata->assoc_context = CurrentMemoryContext;
	return edata;
}

void
FreeErrorData(ErrorData *edata)
{
	if (edata->message)
		pfree(edata->message);
	if (edata->detail)
		pfree(edata->detail);
	if (edata->hint)
		pfree(edata->hint);
	pfree(edata);
}

void
EmitErrorReport(void)
{
	fprintf(stderr, "shim: %s [%s] %s\n", shim_error.message,
			unpack_sql_state(shim_error.sqlerrcode), shim_error.detail);
}

int
shim_error_code(void)
{
	return shim_error.sqlerrcode;
}

const char *
shim_error_message(void)
{
	return shim_error.message;
}

const char *
shim_error_detail(void)
{
	return shim_error.detail;
}

const char *
shim_error_location(void)
{
	static char buf[256];

	snprintf(buf, sizeof(buf), "%s:%d",
			 shim_error.filename ? shim_error.filename : "?",
			 shim_error.lineno);
	return buf;
}

char *
unpack_sql_state(int sql_state)
{
	static char buf[12];
	int			i;

	for (i = 0; i < 5; i++)
	{
		buf[i] = PGUNSIXBIT(sql_state);
		sql_state >>= 6;
	}
	buf[i] = '\0';
	return buf;
}

void
ExceptionalCondition(const char *conditionName, const char *errorType,
					 const char *fileName, int lineNumber)
{
	fprintf(stderr, "shim: TRAP: %s(\"%s\", File: \"%s\", Line: %d)\n",
			errorType, conditionName, fileName, lineNumber);
	abort();
}

/* The sealer stamps frames with the sender's clock. */
TimestampTz
GetCurrentTimestamp(void)
{
	struct timeval tv;

	gettimeofday(&tv, NULL);
	return (TimestampTz) (tv.tv_sec - 946684800) * 1000000 + tv.tv_usec;
}

bool
TimestampDifferenceExceeds(TimestampTz start_time, TimestampTz stop_time,
						   int msec)
{
	return stop_time - start_time >= (TimestampTz) msec * 1000;
}
