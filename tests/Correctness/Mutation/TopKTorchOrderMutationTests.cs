using Harness.Engine.Ops;
using Harness.Engine.Tensors;

namespace Harness.Tests.Correctness.Mutation;

/// <summary>
/// <see cref="TopKTorchOrder"/> offline: the indices torch 2.14.1's CPU topk (forky's reference interpreter) gave for
/// tie-heavy bf16 rows, recorded once (tests/Correctness/Live/TopKTorchOrderTests.cs asks torch live; the mutation
/// replay and CI run offline). Each size takes another libstdc++ path: partial_sort when k * 64 &lt;= n (64/1, 1500/20),
/// nth_element then sort of the first k - 1 otherwise, that sort past 16 elements (introsort's partition and the final
/// unguarded insertion: 300/20, 1000/100), and rows with NaN (first, last, middle) and -0.0 among the zeros.
/// Written for the Stryker.NET mutants of src/Engine/Ops/TopKTorchOrder.cs (notes/issue-21-mutops.md): a flipped
/// comparison, a heap index one off, a partition bound moved, each reorders equal values or picks another expert.
/// </summary>
public class TopKTorchOrderMutationTests
{
    // torch.topk(x.to(bfloat16), k).indices, row-major [6, k], for the rows of Input(n, k)
    private static readonly Dictionary<(int N, int K), string> TorchIndices = new()
    {
        [(4, 2)] = "1 3 2 0 1 0 3 0 1 3 1 3",
        [(4, 1)] = "1 2 1 3 1 3",
        [(5, 5)] = "0 2 3 4 1 2 1 0 3 4 0 3 2 4 1 4 0 2 3 1 1 3 4 2 0 0 3 1 4 2",
        [(8, 3)] = "7 5 2 4 0 6 6 2 5 7 0 5 0 4 7 6 0 7",
        [(17, 5)] = "3 8 10 11 16 8 0 7 12 3 12 5 16 13 9 0 16 14 4 3 8 9 4 12 16 1 8 6 12 10",
        [(40, 20)] = "21 34 26 13 12 37 32 0 29 5 27 10 36 15 3 2 18 24 23 16 20 2 37 34 26 9 25 14 22 21 12 39 11 19 23 28 31 33 0 17 30 18 21 15 23 13 11 28 31 4 0 1 39 33 34 25 36 37 20 5 39 0 9 19 16 13 24 29 6 35 36 38 32 20 27 22 34 21 3 10 0 18 15 14 21 26 28 5 38 3 2 29 30 24 33 19 31 7 11 36 2 37 32 30 27 26 23 20 19 14 24 12 8 11 4 16 1 29 38 6",
        [(64, 1)] = "3 32 1 0 0 3",
        [(65, 1)] = "1 32 5 0 4 1",
        [(200, 3)] = "13 1 6 100 7 10 7 4 3 199 0 3 8 5 3 11 7 5",
        [(300, 20)] = "104 257 70 72 260 94 239 98 101 234 91 108 110 112 228 114 225 224 122 63 150 174 103 84 91 99 64 159 165 171 149 176 181 182 184 191 192 197 200 59 219 223 158 49 233 47 46 238 105 57 55 59 101 100 98 165 210 66 67 159 0 299 72 203 80 135 136 141 142 145 152 157 158 160 169 180 193 197 65 71 79 218 93 55 224 78 52 164 161 49 217 47 46 231 233 188 41 100 239 203 63 170 244 175 176 177 178 181 51 165 168 162 66 68 159 280 279 73 74 57",
        [(700, 9)] = "14 20 28 3 13 25 37 19 6 350 48 36 14 7 44 24 71 30 9 13 24 11 2 23 29 16 6 0 699 1 25 17 20 22 32 14 26 1 32 10 5 31 41 16 9 18 14 25 19 9 21 30 15 2",
        [(1000, 100)] = "784 356 353 351 350 347 346 780 343 781 341 337 336 357 334 330 327 322 794 319 318 316 797 311 307 389 669 534 535 537 650 544 647 646 641 639 558 532 306 386 755 383 382 379 373 371 370 366 765 364 856 233 231 842 843 226 845 223 216 853 212 211 210 837 861 864 868 199 870 195 873 192 877 186 886 275 304 302 805 807 289 287 284 813 279 278 816 752 272 821 267 262 824 826 255 829 249 248 244 520 500 469 499 492 490 489 486 485 482 481 476 475 473 422 466 465 463 451 449 444 442 439 436 434 430 419 544 865 858 582 576 575 568 565 560 552 549 546 503 543 536 533 528 525 522 521 512 510 509 505 241 297 295 283 281 271 267 264 254 253 248 246 244 300 237 235 232 231 228 216 212 211 209 203 197 365 416 410 408 402 400 398 394 388 387 372 370 584 355 351 349 338 334 329 327 323 316 313 308 861 241 280 275 272 269 262 259 258 256 254 247 245 243 282 240 237 233 230 222 218 213 305 406 411 416 385 314 350 323 331 334 315 374 376 378 380 381 383 418 387 392 393 399 400 371 299 297 296 291 283 576 533 537 540 545 552 553 556 557 562 568 572 574 530 588 589 597 600 605 608 614 620 624 625 629 473 419 426 432 438 440 446 450 456 457 467 470 403 488 490 494 497 498 504 509 511 513 526 527 307 0 999 345 292 775 776 778 335 781 783 785 787 789 325 791 792 793 794 315 313 799 800 307 301 296 811 535 753 185 526 524 521 519 517 650 744 380 749 751 348 372 754 369 756 759 761 767 357 768 352 770 862 239 237 846 848 850 226 223 217 859 860 212 843 209 865 204 203 866 869 870 873 189 879 807 264 814 286 284 278 823 274 824 268 267 827 830 291 262 833 258 256 255 251 836 249 839 246 245 542 782 761 356 352 350 772 346 773 777 780 335 334 332 364 330 327 787 319 317 789 312 793 309 301 300 395 638 550 639 541 540 649 652 654 643 737 401 397 804 394 743 390 388 385 384 381 378 755 757 365 210 237 841 846 232 850 227 225 852 854 221 219 214 241 208 864 866 198 196 194 870 871 873 182 181 268 805 293 290 809 812 283 815 279 273 272 822 406 825 259 830 257 831 255 832 834 251 835 244 656 189 245 703 831 820 259 826 398 824 253 705 707 851 832 809 187 877 880 715 450 278 452 386 804 177 843 206 205 686 864 200 436 848 419 846 418 845 229 885 231 394 265 234 817 263 237 238 411 242 407 912 484 297 905 144 143 906 487 139 299 727 490 491 148 785 132 916 654 919 302 651 126 497 921 499 288 886 801 173 285 460 718 463 464 380 468 163 810 795 721 474 664 376 154 294 791 151 788 482 438",
        [(1500, 20)] = "29 10 43 3 12 45 32 56 23 35 15 0 52 44 53 42 58 37 26 14 750 58 25 4 7 63 9 81 43 20 12 31 66 28 72 57 39 83 50 41 18 57 65 33 24 21 1 80 40 50 30 13 68 8 76 64 82 52 25 20 0 1499 43 73 10 75 46 69 95 59 54 78 80 17 84 70 27 97 60 52 18 4 42 0 12 43 9 48 11 5 15 2 29 8 45 21 51 37 28 26 8 1 47 23 2 50 4 67 20 40 24 13 30 17 61 37 71 42 38 14",
    };

    /// <summary>The recorded input: values in {-0, 0, .125, .25, .375} from a hash of (row, column, n, k); NaN at row 1's
    /// middle and row 3's ends. [6, n] bfloat16 (every value exact).</summary>
    internal static Tensor Input(int n, int k)
    {
        const int rows = 6;
        var data = new float[rows * n];
        for (int r = 0; r < rows; r++)
            for (int j = 0; j < n; j++)
            {
                uint h = unchecked((uint)(r * 1000003 + j * 7919 + n * 31 + k));
                h ^= h >> 16; h = unchecked(h * 0x45d9f3bu); h ^= h >> 16;
                float v = (h & 3) * 0.125f;
                data[r * n + j] = v == 0 && ((h >> 2) & 1) != 0 ? -0f : v;
            }
        data[1 * n + n / 2] = float.NaN;
        if (n > 1) { data[3 * n] = float.NaN; data[3 * n + n - 1] = float.NaN; }
        return Tensor.FromArray(data, rows, n).To(DType.BFloat16);
    }

    public static TheoryData<int, int> Sizes()
    {
        var data = new TheoryData<int, int>();
        foreach (var (n, k) in TorchIndices.Keys) data.Add(n, k);
        return data;
    }

    [Theory]
    [MemberData(nameof(Sizes))]
    public void Ties_nans_and_signed_zeros_come_out_in_torchs_cpu_order(int n, int k)
    {
        var x = Input(n, k);
        var (values, indices) = TopKTorchOrder.Forward(x, k);
        long[] want = TorchIndices[(n, k)].Split(' ').Select(long.Parse).ToArray();
        Assert.Equal(new long[] { 6, k }, indices.Shape.ToArray().Select(d => (long)d).ToArray());
        Assert.Equal(want, indices.ToInt64Array());
        // the values are x at those indices, bit for bit (a -0.0 stays -0.0, NaN stays NaN), in x's dtype
        Assert.Equal(DType.BFloat16, values.DType);
        var xb = x.ToBFloat16Bits();
        var vb = values.ToBFloat16Bits();
        for (int i = 0; i < want.Length; i++) Assert.Equal(xb[i / k * n + want[i]], vb[i]);
    }

    [Fact]
    public void A_scalar_is_its_own_top_1_and_k_outside_0_to_n_is_refused_naming_k_and_the_shape()
    {
        var s = Tensor.FromArray(new[] { 2.5f }).Reshape();
        var (v, i) = TopKTorchOrder.Forward(s, 1);
        Assert.Equal(0, v.Rank);
        Assert.Equal(0, i.Rank);
        Assert.Equal(2.5f, v.ToFloatArray()[0]);
        Assert.Equal(0L, i.ToInt64Array()[0]);
        var x = Tensor.FromArray(new[] { 1f, 2f, 3f }, 1, 3);
        var (v0, i0) = TopKTorchOrder.Forward(x, 0);
        Assert.Equal(new[] { 1, 0 }, v0.Shape.ToArray());
        Assert.Equal(new[] { 1, 0 }, i0.Shape.ToArray());
        var (v3, i3) = TopKTorchOrder.Forward(x, 3);
        Assert.Equal(new long[] { 2, 1, 0 }, i3.ToInt64Array());
        Assert.Equal(new[] { 3f, 2f, 1f }, v3.ToFloatArray());
        var big = Assert.Throws<ArgumentOutOfRangeException>(() => TopKTorchOrder.Forward(x, 4));
        Assert.StartsWith("topk: selected index k=4 out of range for last dim of size 3 (shape [1, 3])", big.Message);
        var neg = Assert.Throws<ArgumentOutOfRangeException>(() => TopKTorchOrder.Forward(x, -1));
        Assert.StartsWith("topk: selected index k=-1 out of range for last dim of size 3 (shape [1, 3])", neg.Message);
        var ints = Assert.Throws<ArgumentException>(() => TopKTorchOrder.Forward(Tensor.FromArray(new long[] { 1, 2 }, 2), 1));
        Assert.StartsWith("topk: expected a floating-point tensor", ints.Message);
    }
}
