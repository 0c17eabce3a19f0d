/*-------------------------------------------------------------------------
 *
 * pg_shim.h
 *		  What the fuzz target and the seed generator need from pg_shim.c
 *		  beyond the backend's own declarations.
 *
 * IDENTIFICATION
 *		  test/fuzz/pg_shim.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PG_SHIM_H
#define PG_SHIM_H

/* Make TopMemoryContext and make it current; call once. */
extern void shim_init(void);

/* The ERROR caught last (valid until FlushErrorState()). */
extern int	shim_error_code(void);
extern const char *shim_error_message(void);
extern const char *shim_error_detail(void);
extern const char *shim_error_location(void);

#endif							/* PG_SHIM_H */
