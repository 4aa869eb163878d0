using System.Runtime.InteropServices;

namespace Harness.Engine.IO;

/// <summary>
/// The C library calls the harness makes on Linux, in one file: statx (what a path is, symbolic links followed, without
/// opening it: a FIFO would block an open), link (hard links into the reference's root) and chown (scratch folders for an
/// unprivileged worker), madvise (huge pages for packed weights, a mapped checkpoint's pages given back once packed). Every
/// call returns its errno; callers name the path and the error.
/// </summary>
public static unsafe class Libc
{
    private const string Lib = "libc";
    private const int AtFdCwd = -100;
    private const uint StatxType = 0x1, StatxMode = 0x2, StatxSize = 0x200;

    [DllImport(Lib, SetLastError = true, EntryPoint = "statx")]
    private static extern int statx(int dirfd, [MarshalAs(UnmanagedType.LPUTF8Str)] string path, int flags, uint mask, byte* buffer);

    [DllImport(Lib, SetLastError = true, EntryPoint = "link")]
    private static extern int link([MarshalAs(UnmanagedType.LPUTF8Str)] string oldPath, [MarshalAs(UnmanagedType.LPUTF8Str)] string newPath);

    [DllImport(Lib, SetLastError = true, EntryPoint = "chown")]
    private static extern int chown([MarshalAs(UnmanagedType.LPUTF8Str)] string path, int owner, int group);

    [DllImport(Lib, SetLastError = true, EntryPoint = "realpath")]
    private static extern nint realpath([MarshalAs(UnmanagedType.LPUTF8Str)] string path, nint resolved);

    [DllImport(Lib, EntryPoint = "free")]
    private static extern void free(nint p);

    [DllImport(Lib, SetLastError = true, EntryPoint = "madvise")]
    private static extern int madvise(void* addr, nuint length, int advice);

    /// <summary>madvise's advice: MADV_DONTNEED (the pages leave this process; a file mapping's are read again on the next
    /// access) and MADV_HUGEPAGE (back the range with transparent huge pages where the kernel allows it).</summary>
    public const int MadvDontNeed = 4, MadvHugePage = 14;

    /// <summary>madvise(addr, length, advice): 0, or the errno (addr must be page-aligned).</summary>
    public static int Madvise(void* addr, nuint length, int advice) =>
        madvise(addr, length, advice) == 0 ? 0 : Marshal.GetLastPInvokeError();

    public const int ENOENT = 2, EACCES = 13, EXDEV = 18, ENOTDIR = 20, ELOOP = 40, ENAMETOOLONG = 36;

    /// <summary>
    /// statx(path) following symbolic links: (0, st_mode, st_size) or (errno, 0, 0). struct statx has one layout on every
    /// architecture: stx_mode is the u16 at byte 28, stx_size the u64 at byte 40.
    /// </summary>
    public static (int Errno, uint Mode, long Size) Stat(string path)
    {
        var buffer = stackalloc byte[256];
        int rc;
        try
        {
            rc = statx(AtFdCwd, path, 0, StatxType | StatxMode | StatxSize, buffer);
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            return (-1, 0, 0);   // no statx (not Linux, or glibc before 2.28): the caller falls back to managed checks
        }
        if (rc != 0) return (Marshal.GetLastPInvokeError(), 0, 0);
        return (0, *(ushort*)(buffer + 28), *(long*)(buffer + 40));
    }

    /// <summary>link(2): 0, or errno (EXDEV across filesystems).</summary>
    public static int Link(string oldPath, string newPath)
    {
        try
        {
            return link(oldPath, newPath) == 0 ? 0 : Marshal.GetLastPInvokeError();
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            return -1;
        }
    }

    /// <summary>chown(2): 0, or errno.</summary>
    public static int Chown(string path, int uid, int gid)
    {
        try
        {
            return chown(path, uid, gid) == 0 ? 0 : Marshal.GetLastPInvokeError();
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            return -1;
        }
    }

    /// <summary>realpath(3): the path with every symbolic link and "." or ".." resolved, or null (with errno) when it cannot be.</summary>
    public static (string? Path, int Errno) RealPath(string path)
    {
        nint p;
        try
        {
            p = realpath(path, 0);
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            return (null, -1);
        }
        if (p == 0) return (null, Marshal.GetLastPInvokeError());
        try
        {
            return (Marshal.PtrToStringUTF8(p), 0);
        }
        finally
        {
            free(p);
        }
    }

    /// <summary>The C library's text for an errno ("No such file or directory").</summary>
    public static string Describe(int errno) => errno < 0 ? "not supported here" : Marshal.GetPInvokeErrorMessage(errno);
}
